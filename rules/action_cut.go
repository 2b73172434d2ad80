package rules

import (
	"time"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

func init() { Register("cut", func() Action { return &CutAction{} }) }

// CutAction lets the first bytes of the rule's side's data through and resets the
// connection there: the segment that crosses the limit leaves cut to it (its FIN
// cleared), later data is dropped, and RSTs go both ways: toward the side at once,
// toward its peer once the peer acknowledged the last byte let through (or after a
// second), so that it has every byte before it. The bytes are counted by the tracker
// (Conn.Sent) from the connection's first byte.
//
//	[[rule]]
//	side = "server"
//	payload = "some"
//	action = "cut"
//	bytes = 1000     # how many bytes pass, 0 or more
//
// Without a sink that rewrites segments, the crossing segment is dropped whole.
type CutAction struct {
	Bytes int64 `toml:"bytes"`
}

// cutAckWait bounds how long the RST toward the receiver waits for its ACK of the last
// byte let through.
const cutAckWait = time.Second

// Validate checks bytes.
func (a *CutAction) Validate() error {
	if a.Bytes < 0 {
		return paramError{"bytes", "must not be negative"}
	}
	return nil
}

// Injects reports that cut sends RSTs.
func (*CutAction) Injects() bool { return true }

// NeedsData reports that cut counts the data segments.
func (*CutAction) NeedsData() bool { return true }

// Apply passes, cuts or drops a data segment of the side.
func (a *CutAction) Apply(c *Context) {
	s := &c.Packet.Seg
	conn := c.Conn
	sent := conn.Sent(c.Side)
	if sent <= uint64(a.Bytes) || s.PayloadLen == 0 {
		c.Pass()
		return
	}
	over := sent - uint64(a.Bytes)
	if over > 1<<30 {
		over = 1 << 30 // far past the limit: everything here is beyond it
	}
	limit := conn.DataNext(c.Side) - uint32(over) // the sequence number after the last byte let through
	start := s.Seq
	if s.Flags&segment.SYN != 0 {
		start++
	}
	end := start + uint32(s.PayloadLen)
	switch {
	case seqGEQ(limit, end):
		c.Pass() // a retransmission of bytes within the limit
		return
	case seqLT(start, limit) && c.CanRewrite():
		m, err := mutate.Parse(c.Packet.Data)
		if err == nil {
			m.SetPayload(m.Payload()[:limit-start])
			m.ClearFlags(segment.FIN)
			var b []byte
			if b, err = m.Bytes(); err == nil {
				c.PassModified(b)
				break
			}
		}
		c.Logger().Warn("cut: cannot cut the segment; dropped", "rule", c.Rule.Name, "err", err)
		c.Drop()
	default:
		c.Drop()
	}
	done := c.RuleVar()
	if *done != 0 {
		return
	}
	*done = 1
	StateResets(c, c.Side, 0, false)
	receiver := c.Side.Other()
	rst, err := resetAt(conn, receiver, limit)
	if err != nil {
		c.Logger().Warn("cut: cannot build the RST", "rule", c.Rule.Name, "err", err)
		return
	}
	c.Inject(Injection{Data: rst, Timeout: cutAckWait, SendOnTimeout: true, Until: func(x *Conn) bool {
		return x.side(receiver).ackValid && seqGEQ(x.HighestAck(receiver), limit)
	}})
}

// resetAt makes a RST|ACK toward target at sequence number seq.
func resetAt(conn *Conn, target Side, seq uint32) ([]byte, error) {
	from, to := conn.server, conn.client
	if target == Server {
		from, to = conn.ServerSideClient(), conn.server
	}
	return mutate.Reset(from, to, seq, conn.NextSeq(target))
}
