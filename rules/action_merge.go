package rules

import "time"

func init() { Register("merge", func() Action { return &MergeAction{} }) }

// MergeAction merges a pure ACK into the same side's FIN: it holds the ACK and, when that
// side's FIN carrying the same ack number is seen, drops the held ACK, as the FIN
// carries the acknowledgment. Applied to the server's ACK of the client's FIN, this turns
// a four-segment close into a three-segment one:
//
//	[[rule]]
//	side = "server"
//	flags = "pure-ack"
//	phase = "ack-of-client-fin"
//	action = "merge"
//	timeout = "1s"    # default 1s
//
// The held ACK passes unchanged when no FIN comes within the timeout, and when the FIN
// that comes carries another ack number (it then passes just before that FIN). A segment
// that is not a pure ACK, or a pure ACK sent after its side's FIN, passes at once.
type MergeAction struct {
	Timeout Duration `toml:"timeout,positive"`
}

// DefaultMergeTimeout is the merge action's timeout when none is given.
const DefaultMergeTimeout = time.Second

// NeedsData reports that merge must see pure ACKs, not only SYN, FIN and RST segments.
func (*MergeAction) NeedsData() bool { return true }

// Apply holds a pure ACK until its side's FIN.
func (a *MergeAction) Apply(c *Context) {
	seg := &c.Packet.Seg
	side := c.Side
	if !seg.IsPureACK() || c.Conn.FINSeen(side) {
		c.Pass()
		return
	}
	ack := seg.Ack
	timeout := time.Duration(a.Timeout)
	if timeout <= 0 {
		timeout = DefaultMergeTimeout
	}
	c.Hold(Hold{
		Until: func(conn *Conn) bool { return conn.FINSeen(side) },
		Decide: func(conn *Conn) Verdict {
			if conn.FINAck(side) == ack {
				return Drop
			}
			return Accept
		},
		Timeout:   timeout,
		OnTimeout: Accept,
		Kind:      KindMerge,
	})
}
