package rules

import (
	"time"

	"github.com/finproxy/finproxy/segment"
)

func init() { Register("reuse-tuple", func() Action { return &ReuseTupleAction{} }) }

// ReuseTupleAction makes a new connection reuse the 4-tuple of a connection whose server
// socket is still in TIME_WAIT (scenario 11): it rewrites the client port of the new
// connection, on every segment in both directions, to the port of the latest such
// connection from the same client address to the same server. The server sees the SYN
// arrive on its TIME_WAIT socket's 4-tuple; the client sees nothing of it.
//
//	[[rule]]
//	side = "client"
//	flags = "SYN"
//	action = "reuse-tuple"
//	max_age = "60s"    # only a connection seen this recently (default 60s: Linux's
//	                   # TIME_WAIT lasts 60 s)
//
// The server's socket is in TIME_WAIT when the server closed first (its FIN did not
// acknowledge the client's: Conn.ClosedFirst), its FIN was acknowledged and the client's
// FIN was seen, with no RST. A port another tracked connection now uses toward the server
// is not reused. Only a connection's first SYN is rewritten (retransmissions follow, as
// everything else of the connection does); without a candidate the SYN passes unchanged.
// The event log shows the new connection under the client's real port, every segment
// Modified; the observer sees the client's socket at that port and the server's at the
// reused one (a new incarnation of the old 4-tuple). When the engine cannot give segments
// back changed (Context.CanRewrite), it rewrites nothing.
//
// Whether the server's TIME_WAIT socket accepts the SYN is the kernel's business: Linux
// accepts it when its timestamp is newer than the old connection's last (or, without
// timestamps, its seq beyond the old connection's); the client's kernel chose both for the
// client's real port, so with a rewritten port it is a coin toss (measured: 26 accepted,
// 19 rejected by PAWS in 45 runs; see configs/time-wait-reuse.toml).
type ReuseTupleAction struct {
	MaxAge Duration `toml:"max_age,positive"`
}

// DefaultReuseMaxAge is reuse-tuple's max_age when none is given.
const DefaultReuseMaxAge = 60 * time.Second

// NeedsData reports that reuse-tuple must see every segment of the connections it
// rewrites.
func (*ReuseTupleAction) NeedsData() bool { return true }

// Apply rewrites a new connection's client port to a TIME_WAIT candidate's.
func (a *ReuseTupleAction) Apply(c *Context) {
	seg := &c.Packet.Seg
	if !c.CanRewrite() || c.Side != Client || seg.Flags&(segment.SYN|segment.ACK) != segment.SYN ||
		c.Conn.Segments(Client) != 1 || c.Conn.alias.IsValid() {
		c.Pass()
		return
	}
	maxAge := time.Duration(a.MaxAge)
	if maxAge <= 0 {
		maxAge = DefaultReuseMaxAge
	}
	if cand := c.e.timeWaitCandidate(c.Conn, maxAge, c.Now()); cand != nil {
		c.RewriteClientPort(cand.ServerSideClient().Port())
	}
	c.Pass()
}

// timeWaitCandidate returns the latest connection, seen within maxAge, from cur's client
// address to cur's server whose server socket is in TIME_WAIT and whose 4-tuple (as the
// server sees it) no later connection uses; nil if there is none.
func (e *Engine) timeWaitCandidate(cur *Conn, maxAge time.Duration, now time.Time) *Conn {
	// The latest connection on each 4-tuple, as the server sees it.
	latest := map[tupleKey]*Conn{}
	for _, k := range e.tr.conns {
		if k == cur || k.server != cur.server || k.ServerSideClient().Addr() != cur.client.Addr() {
			continue
		}
		key := keyOf(k.ServerSideClient(), k.server)
		if l := latest[key]; l == nil || k.created.After(l.created) {
			latest[key] = k
		}
	}
	var best *Conn
	for _, k := range latest {
		sv, cl := &k.sides[1], &k.sides[0]
		switch {
		case !sv.finSeen || !sv.finFirst || !sv.finAcked || !cl.finSeen:
		case sv.rstSeen || cl.rstSeen:
		case now.Sub(k.lastSeen) > maxAge:
		case k.ServerSideClient() == cur.client:
		case best == nil || k.lastSeen.After(best.lastSeen) ||
			k.lastSeen.Equal(best.lastSeen) && k.ServerSideClient().Port() < best.ServerSideClient().Port():
			best = k
		}
	}
	return best
}
