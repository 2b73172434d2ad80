package rules

import (
	"fmt"
	"time"

	"github.com/finproxy/finproxy/mutate"
)

func init() { Register("duplicate", func() Action { return &DuplicateAction{} }) }

// DuplicateAction passes the segment and sends copies of it after it, as a network that
// duplicates packets would: the receiver sees the same bytes twice (a duplicate ACK, a
// D-SACK, a retransmitted FIN re-acknowledged).
//
//	action = "duplicate"
//	delay = "50ms"   # the first copy this long after the original (default 0: right after
//	                 # its verdict), each further copy as long after the one before
//	copies = 1       # default 1, at most 100
//
// The copies are the segment as it left (with its checksums recomputed), sent by finproxy;
// they do not pass through the rules.
type DuplicateAction struct {
	Delay  Duration `toml:"delay"`
	Copies int      `toml:"copies,positive"`
}

// MaxCopies bounds duplicate's copies.
const MaxCopies = 100

// Validate checks the number of copies, and that the last leaves within MaxDuration.
func (a *DuplicateAction) Validate() error {
	if a.Copies < 0 || a.Copies > MaxCopies {
		return paramError{"copies", "must be 1 to 100"}
	}
	if span := time.Duration(max(a.Copies, 1)) * time.Duration(a.Delay); span > MaxDuration {
		return paramError{"delay", fmt.Sprintf("%s apart, the last of %d copies would leave %s after the segment: at most %s",
			durationText(time.Duration(a.Delay)), max(a.Copies, 1), durationText(span), durationText(MaxDuration))}
	}
	return nil
}

// Injects reports that duplicate sends segments.
func (*DuplicateAction) Injects() bool { return true }

// Apply passes the segment and schedules its copies.
func (a *DuplicateAction) Apply(c *Context) {
	c.Pass()
	cp, err := copyOf(c.Packet.Data)
	if err != nil {
		c.Logger().Warn("duplicate: cannot copy the segment; no copy sent", "rule", c.Rule.Name, "err", err)
		return
	}
	n := max(a.Copies, 1)
	for i := 1; i <= n; i++ {
		c.Inject(Injection{Data: cp, Delay: time.Duration(i) * time.Duration(a.Delay)})
	}
}

// copyOf returns a copy of the IP packet b with complete checksums (a queued packet's
// TCP checksum may be only partly computed, left to offload).
func copyOf(b []byte) ([]byte, error) {
	s, err := mutate.Parse(b)
	if err != nil {
		return nil, err
	}
	return s.Bytes()
}
