package rules

import (
	"time"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

func init() { Register("merge-data-fin", func() Action { return &MergeDataFINAction{} }) }

// MergeDataFINAction makes a sender's last data segment carry its FIN (scenario 7: a FIN
// carrying data). It holds each data segment the rule matches until the same side sends
// its next segment: when that is a bare FIN right after it (its seq is the data's seq +
// length), the data segment leaves with the FIN set (and the FIN's acknowledgment, window
// and timestamps: mutate's Append), and the FIN is dropped, merged into it. The receiver
// then acknowledges both at once: ack = seq + len + 1.
//
//	[[rule]]
//	side = "server"
//	action = "merge-data-fin"
//	timeout = "100ms"   # how long a data segment waits for what follows (default 100ms)
//
// Anything else the side sends releases the held segment unchanged, just before it, and
// so does the timeout: the stream always arrives whole and in order. A retransmission of
// the held segment (its seq, at least its length: the sender's retransmission timer fired
// while it was held) supersedes it: the held copy is dropped (counted as merged) and the
// retransmission is held in its place, so that the data still waits for the FIN. A data segment that
// already carries a FIN, and the other side's segments, pass. The rule must match the
// side's FIN as well as its data (do not restrict it to payload = "some"): a FIN the rule
// does not see cannot be merged, and would overtake the held data segment. When the
// engine cannot give segments back changed (Context.CanRewrite), it passes everything.
type MergeDataFINAction struct {
	Timeout Duration `toml:"timeout,positive"`
}

// DefaultMergeDataFINTimeout is merge-data-fin's timeout when none is given: well under
// the 200 ms minimum retransmission timeout, so the sender does not retransmit the
// segment it holds.
const DefaultMergeDataFINTimeout = 100 * time.Millisecond

// NeedsData reports that merge-data-fin must see data segments.
func (*MergeDataFINAction) NeedsData() bool { return true }

// Apply holds a data segment, merges a held one into the FIN after it, or releases it.
func (a *MergeDataFINAction) Apply(c *Context) {
	if !c.CanRewrite() {
		c.Pass()
		return
	}
	seg := &c.Packet.Seg
	var held []Held
	for _, h := range c.Held() {
		if hs := h.Seg(); hs.Src == seg.Src {
			held = append(held, h)
		}
	}
	if len(held) == 1 && seg.Flags&(segment.SYN|segment.RST|segment.FIN) == segment.FIN && seg.PayloadLen == 0 {
		h := held[0]
		hs := h.Seg()
		if seg.Seq == hs.Seq+uint32(hs.PayloadLen) {
			merged, err := mergeDataFIN(h.Data(), c.Packet.Data)
			if err == nil {
				c.ReleaseModified(h, merged)
				c.DropMerged()
				return
			}
			c.Logger().Warn("merge-data-fin: cannot merge; both pass unchanged", "rule", c.Rule.Name, "err", err)
		}
	}
	for _, h := range held {
		if hs := h.Seg(); seg.Seq == hs.Seq && seg.PayloadLen >= hs.PayloadLen {
			// A retransmission that carries all of it (the sender's timer fired while
			// the segment was held): the held copy is superseded, not released, so
			// that the data still does not arrive without the FIN.
			c.Release(h, Drop)
		} else {
			c.Release(h, Accept)
		}
	}
	if seg.PayloadLen > 0 && seg.Flags&(segment.SYN|segment.RST|segment.FIN) == 0 && len(c.Packet.Data) > 0 {
		timeout := time.Duration(a.Timeout)
		if timeout <= 0 {
			timeout = DefaultMergeDataFINTimeout
		}
		c.Hold(Hold{Timeout: timeout, OnTimeout: Accept, Kind: KindMerge, KeepData: true})
		return
	}
	c.Pass()
}

// mergeDataFIN returns the data segment with the FIN after it appended.
func mergeDataFIN(data, fin []byte) ([]byte, error) {
	d, err := mutate.Parse(data)
	if err != nil {
		return nil, err
	}
	f, err := mutate.Parse(fin)
	if err != nil {
		return nil, err
	}
	if err := d.Append(f); err != nil {
		return nil, err
	}
	return d.Bytes()
}
