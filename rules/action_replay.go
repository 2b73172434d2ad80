package rules

import (
	"fmt"
	"time"
)

func init() { Register("replay", func() Action { return &ReplayAction{} }) }

// ReplayAction keeps a copy of the segment and sends it again later: after the next
// connection on the same 4-tuple has started (scenario 12: an old duplicate arriving in a
// new incarnation, what TIME_WAIT and PAWS exist for), or once this connection is over
// (it then meets the TIME_WAIT socket).
//
//	[[rule]]
//	side = "client"
//	payload = "some"
//	nth = 1
//	action = "replay"
//	after = "next-incarnation"   # next-incarnation (default): once a later connection on
//	                             # the 4-tuple has completed its handshake;
//	                             # close: once this one is over (both FINs acknowledged,
//	                             # or a RST)
//	delay = "20ms"               # then wait this long more (default 20ms), so that the
//	                             # copy does not overtake the segment that made it due
//	original = "pass"            # pass (default), or drop: the original is lost now (its
//	                             # sender retransmits it) and arrives later, as a segment
//	                             # delayed in the network would
//	timeout = "30s"              # give up (nothing sent) if that does not happen by then
//	                             # (default 30s)
//
// The copy is the segment as it left, checksums recomputed: sequence numbers, timestamps
// and all of the old connection. What the receiver makes of it (PAWS, out of window,
// accepted) is the kernel's business; the record of the copy says when it was sent.
type ReplayAction struct {
	After    string   `toml:"after"`
	Delay    Duration `toml:"delay,positive"`
	Original Verdict  `toml:"original"`
	Timeout  Duration `toml:"timeout,positive"`
}

// Replay triggers (ReplayAction.After).
const (
	ReplayNextIncarnation = "next-incarnation"
	ReplayClose           = "close"
)

// Replay defaults.
const (
	DefaultReplayDelay   = 20 * time.Millisecond
	DefaultReplayTimeout = 30 * time.Second
)

// Validate checks after and original.
func (a *ReplayAction) Validate() error {
	switch a.After {
	case "", ReplayNextIncarnation, ReplayClose:
	default:
		return paramError{"after", fmt.Sprintf("unknown event %q (want next-incarnation or close)", a.After)}
	}
	if a.Original != Accept && a.Original != Drop {
		return paramError{"original", "must be pass or drop"}
	}
	return nil
}

// Injects reports that replay sends segments.
func (*ReplayAction) Injects() bool { return true }

// NeedsHandshake reports that replay must see the next incarnation's handshake.
func (*ReplayAction) NeedsHandshake() bool { return true }

// NeedsData reports that replay must see every segment: the handshake of the next
// incarnation, the acknowledgments that end this one.
func (*ReplayAction) NeedsData() bool { return true }

// Apply passes or drops the segment and keeps its copy until the event.
func (a *ReplayAction) Apply(c *Context) {
	if a.Original == Drop {
		c.Drop()
	} else {
		c.Pass()
	}
	cp, err := copyOf(c.Packet.Data)
	if err != nil {
		c.Logger().Warn("replay: cannot copy the segment; nothing will be replayed", "rule", c.Rule.Name, "err", err)
		return
	}
	orig := c.Conn
	until := func(cur *Conn) bool { return cur != orig && cur.HandshakeDone() }
	if a.After == ReplayClose {
		until = func(cur *Conn) bool { return cur == orig && cur.Finished() }
	}
	delay := time.Duration(a.Delay)
	if delay <= 0 {
		delay = DefaultReplayDelay
	}
	timeout := time.Duration(a.Timeout)
	if timeout <= 0 {
		timeout = DefaultReplayTimeout
	}
	c.Inject(Injection{Data: cp, Until: until, Delay: delay, Timeout: timeout})
}
