package rules

import (
	"fmt"
	"time"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

func init() { Register("inject-rst", func() Action { return &InjectRSTAction{} }) }

// InjectRSTAction sends a RST toward one side (or both) when the rule matches a segment,
// mid-stream or mid-close (scenario 14): a RST|ACK from the peer's address whose seq is
// exactly the sequence number the target expects next, so that it is taken as a reset
// (RFC 5961: a RST elsewhere in the window only draws a challenge ACK). The target's
// application then sees ECONNRESET on its next read or write.
//
//	[[rule]]
//	side = "client"
//	flags = "pure-ack"
//	phase = "established"
//	nth = 1
//	action = "inject-rst"
//	toward = "client"    # required: client | server | both
//	segment = "pass"     # what becomes of the matched segment: pass (default) or drop
//	delay = "500ms"      # optional: send the RSTs this long after the match
//
// The seq comes from the matched segment. Sent by the target, its ack is what the target
// expects (exact, whatever is in flight toward the target: match a segment of the target,
// such as its ACK, when you can). Sent toward the target, the RST's seq is the segment's
// seq plus its length when the segment passes (the RST then races it: injected from here
// it can arrive first, and draw a challenge ACK instead of a reset), or the segment's seq
// when it is dropped. The RST toward the other side of "both" is computed the same way.
//
// With a delay, the RSTs are made when they are sent, from what the connection's sides
// have sent by then (StateResets): toward each target one whose seq is the highest ack
// the target sent, and a second one at the peer's next sequence number when that
// differs (data of the peer in flight, or dropped). With limit = 1 that is one reset per
// connection, delay after the first segment the rule matches.
type InjectRSTAction struct {
	Toward  string   `toml:"toward"`
	Segment Verdict  `toml:"segment"`
	Delay   Duration `toml:"delay"`
}

// Validate checks toward.
func (a *InjectRSTAction) Validate() error {
	switch a.Toward {
	case "client", "server", "both":
	case "":
		return paramError{"toward", "is required: client, server or both"}
	default:
		return paramError{"toward", fmt.Sprintf("unknown side %q (want client, server or both)", a.Toward)}
	}
	if a.Segment != Accept && a.Segment != Drop {
		return paramError{"segment", "must be pass or drop"}
	}
	if a.Delay < 0 {
		return paramError{"delay", "must not be negative"}
	}
	return nil
}

// Injects reports that inject-rst sends segments.
func (*InjectRSTAction) Injects() bool { return true }

// Apply passes or drops the segment and sends the RSTs.
func (a *InjectRSTAction) Apply(c *Context) {
	if a.Segment == Drop {
		c.Drop()
	} else {
		c.Pass()
	}
	targets := towardSides(a.Toward)
	if a.Delay > 0 {
		for _, t := range targets {
			StateResets(c, t, time.Duration(a.Delay), false)
		}
		return
	}
	for _, t := range targets {
		rst, err := resetToward(c, t, a.Segment == Drop)
		if err != nil {
			c.Logger().Warn("inject-rst: cannot build the RST", "rule", c.Rule.Name, "toward", t.String(), "err", err)
			continue
		}
		c.Inject(Injection{Data: rst})
	}
}

// towardSides are the sides a toward parameter names: client, server, or both.
func towardSides(toward string) []Side {
	switch toward {
	case "client":
		return []Side{Client}
	case "server":
		return []Side{Server}
	}
	return []Side{Client, Server}
}

// StateResets injects, d from now, RSTs toward target made when they are sent from what
// the connection's sides have sent by then: one whose seq is the highest ack the target
// sent (what it expects next, once everything it acknowledged arrived), and one at the
// peer's next sequence number when that differs (the peer's data in flight, or dropped:
// one of the two is what the target expects; the other draws at most a challenge ACK,
// or nothing once the first reset it). restart makes them replace the rule's restartable
// RSTs on this connection not sent yet (a timer that starts again).
func StateResets(c *Context, target Side, d time.Duration, restart bool) {
	for _, peerNext := range []bool{false, true} {
		c.Inject(Injection{Delay: d, Restart: restart, Make: func(conn *Conn) ([]byte, error) {
			return stateReset(conn, target, peerNext)
		}})
	}
}

// stateReset makes a RST|ACK toward target from the connection's state (StateResets);
// nil when peerNext and the peer's next sequence number is the target's highest ack.
func stateReset(conn *Conn, target Side, peerNext bool) ([]byte, error) {
	me, peer := conn.side(target), conn.side(target.Other())
	seq := peer.seqNext
	if peerNext {
		if !me.ackValid || me.ackHigh == peer.seqNext {
			return nil, nil
		}
	} else if me.ackValid {
		seq = me.ackHigh
	}
	from, to := conn.server, conn.client
	if target == Server {
		from, to = conn.ServerSideClient(), conn.server
	}
	return mutate.Reset(from, to, seq, me.seqNext)
}

// resetToward builds a RST|ACK from target's peer to target, from the matched segment.
func resetToward(c *Context, target Side, dropped bool) ([]byte, error) {
	s := &c.Packet.Seg
	conn := c.Conn
	var seq, ack uint32
	if c.Side == target {
		// What the target sent says what it expects.
		seq = s.Ack
		if s.Flags&segment.ACK == 0 {
			seq = conn.NextSeq(target.Other())
		}
		ack = s.Seq + s.SeqLen()
	} else {
		seq = s.Seq
		if !dropped {
			seq += s.SeqLen()
		}
		ack = s.Ack
		if s.Flags&segment.ACK == 0 {
			ack = conn.NextSeq(target)
		}
	}
	from, to := conn.server, conn.client
	if target == Server {
		// The server sees the client at its rewritten port, if a rule rewrites it.
		from, to = conn.ServerSideClient(), conn.server
	}
	return mutate.Reset(from, to, seq, ack)
}
