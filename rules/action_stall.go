package rules

import "time"

func init() { Register("stall", func() Action { return &StallAction{} }) }

// StallAction stops the data of the rule's side, as a peer that stopped forwarding it:
// its data segments are dropped (its sender retransmits them), its other segments pass.
// With reset, the connection is then reset both ways once the side has sent no new data
// for that long, counted from the first segment of the side the rule matches on the
// connection and started again by each segment that carries new data (not a
// retransmission): the RSTs are made when they are sent, as inject-rst's with a delay.
//
//	[[rule]]
//	side = "server"   # whose data stops
//	action = "stall"
//	reset = "1s"      # optional: 0 (default) never resets
//
// Match every segment of the side (no payload or flags condition) for the timer to start
// at its first segment (the SYN or SYN|ACK of a new connection).
type StallAction struct {
	Reset Duration `toml:"reset"`
}

// Validate checks reset.
func (a *StallAction) Validate() error {
	if a.Reset < 0 {
		return paramError{"reset", "must not be negative"}
	}
	return nil
}

// Injects reports that stall sends RSTs when it has a reset.
func (a *StallAction) Injects() bool { return a.Reset > 0 }

// NeedsData reports that stall must see the data segments.
func (*StallAction) NeedsData() bool { return true }

// Apply drops a data segment, passes the others, and (re)starts the reset's timer.
func (a *StallAction) Apply(c *Context) {
	seen := c.RuleVar() // the side's bytes sent when the timer last started
	sent := int64(c.Conn.Sent(c.Side))
	if c.Packet.Seg.PayloadLen > 0 {
		c.Drop()
	} else {
		c.Pass()
	}
	if a.Reset <= 0 || (c.Acted() > 1 && sent <= *seen) {
		return
	}
	*seen = sent
	StateResets(c, Client, time.Duration(a.Reset), true)
	StateResets(c, Server, time.Duration(a.Reset), true)
}
