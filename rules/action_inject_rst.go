package rules

import (
	"fmt"

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
//
// The seq comes from the matched segment. Sent by the target, its ack is what the target
// expects (exact, whatever is in flight toward the target: match a segment of the target,
// such as its ACK, when you can). Sent toward the target, the RST's seq is the segment's
// seq plus its length when the segment passes (the RST then races it: injected from here
// it can arrive first, and draw a challenge ACK instead of a reset), or the segment's seq
// when it is dropped. The RST toward the other side of "both" is computed the same way.
type InjectRSTAction struct {
	Toward  string  `toml:"toward"`
	Segment Verdict `toml:"segment"`
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
	var targets []Side
	switch a.Toward {
	case "client":
		targets = []Side{Client}
	case "server":
		targets = []Side{Server}
	default:
		targets = []Side{Client, Server}
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
