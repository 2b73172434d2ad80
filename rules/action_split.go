package rules

import (
	"fmt"
	"time"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

func init() { Register("split", func() Action { return &SplitAction{} }) }

// SplitAction turns a FIN that also acknowledges the peer's FIN (the FIN|ACK that makes a
// three-way close) into two segments: the acknowledgment alone, now (the segment leaves
// with its FIN cleared), and the FIN after it. The peer, in FIN_WAIT1, then passes
// FIN_WAIT2 and waits there for the FIN: a four-way close made of a three-way one.
//
//	[[rule]]
//	side = "server"
//	has_flags = "FIN"
//	phase = "ack-of-client-fin"
//	action = "split"
//	fin = "inject"      # inject (default): finproxy sends the FIN after delay;
//	                    # retransmit: finproxy sends nothing, the sender's kernel
//	                    # retransmits its FIN (from LAST_ACK) when its timer fires
//	delay = "100ms"     # inject: how long after the ACK the FIN follows (default 100ms)
//
// Only the first FIN of a side is split: its retransmissions pass (they are what fin =
// "retransmit" waits for). A segment that is not a FIN|ACK acknowledging the peer's FIN
// passes. Data on the FIN segment stays with the acknowledgment; the FIN follows alone.
// When the engine cannot give segments back changed (Context.CanRewrite), it passes them.
type SplitAction struct {
	FIN   string   `toml:"fin"`
	Delay Duration `toml:"delay,positive"`
}

// Split modes (SplitAction.FIN).
const (
	SplitInject     = "inject"
	SplitRetransmit = "retransmit"
)

// DefaultSplitDelay is split's delay when none is given: less than the sender's minimum
// retransmission timeout (200 ms), so the injected FIN comes first.
const DefaultSplitDelay = 100 * time.Millisecond

// Validate checks the mode and that a delay goes with inject.
func (a *SplitAction) Validate() error {
	switch a.FIN {
	case "", SplitInject:
	case SplitRetransmit:
		if a.Delay != 0 {
			return paramError{"delay", "goes with fin = \"inject\": with retransmit the sender's retransmission timer decides"}
		}
	default:
		return paramError{"fin", fmt.Sprintf("unknown mode %q (want inject or retransmit)", a.FIN)}
	}
	return nil
}

// Injects reports whether split sends the FIN itself.
func (a *SplitAction) Injects() bool { return a.FIN != SplitRetransmit }

// Apply splits the first FIN|ACK of a side that acknowledges the peer's FIN.
func (a *SplitAction) Apply(c *Context) {
	seg := &c.Packet.Seg
	own := PhaseAfterClientFIN
	if c.Side == Server {
		own = PhaseAfterServerFIN
	}
	if !c.CanRewrite() || seg.Flags&(segment.SYN|segment.RST|segment.FIN|segment.ACK) != segment.FIN|segment.ACK ||
		c.Phases&own != 0 || c.Phases&(PhaseAckOfClientFIN|PhaseAckOfServerFIN) == 0 {
		c.Pass()
		return
	}
	ack, fin, err := split(c.Packet.Data)
	if err != nil {
		c.Logger().Warn("split: cannot split; the FIN passes unchanged", "rule", c.Rule.Name, "err", err)
		c.Pass()
		return
	}
	c.PassModified(ack)
	if a.FIN != SplitRetransmit {
		d := time.Duration(a.Delay)
		if d <= 0 {
			d = DefaultSplitDelay
		}
		c.Inject(Injection{Data: fin, Delay: d})
	}
}

// split returns the FIN segment b without its FIN, and the bare FIN that follows it.
func split(b []byte) (ack, fin []byte, err error) {
	s, err := mutate.Parse(b)
	if err != nil {
		return nil, nil, err
	}
	f, err := mutate.Parse(b)
	if err != nil {
		return nil, nil, err
	}
	s.ClearFlags(segment.FIN)
	if ack, err = s.Bytes(); err != nil {
		return nil, nil, err
	}
	f.MoveSeq(int32(len(f.Payload())))
	f.SetPayload(nil)
	f.ClearFlags(segment.PSH)
	if fin, err = f.Bytes(); err != nil {
		return nil, nil, err
	}
	return ack, fin, nil
}
