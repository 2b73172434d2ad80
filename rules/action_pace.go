package rules

import "time"

func init() { Register("pace", func() Action { return &PaceAction{} }) }

// PaceAction paces the data of the rule's side as a link of that rate would: each data
// segment leaves once the bytes before it and its own have gone through at rate bytes
// a second (as the last of its bytes would come out of such a link), per connection: at
// no point has more than rate times the elapsed time left.
// A segment that would wait longer than queue is dropped instead, as a full link's
// queue drops it: its sender retransmits and slows down, instead of retransmitting
// segments still waiting here.
//
//	[[rule]]
//	side = "server"
//	payload = "some"
//	action = "pace"
//	rate = 100000      # required: bytes per second
//	queue = "200ms"    # the longest wait (default 200ms)
type PaceAction struct {
	Rate  int64    `toml:"rate"`
	Queue Duration `toml:"queue"`
}

// DefaultPaceQueue is a pace's longest wait when queue is not given.
const DefaultPaceQueue = 200 * time.Millisecond

// Validate checks rate and queue.
func (a *PaceAction) Validate() error {
	if a.Rate <= 0 {
		return paramError{"rate", "is required and must be more than 0 (bytes per second)"}
	}
	if a.Queue < 0 {
		return paramError{"queue", "must not be negative"}
	}
	return nil
}

// Apply delays the segment until its bytes' turn, or drops it when that is too far.
func (a *PaceAction) Apply(c *Context) {
	n := int64(c.Packet.Seg.PayloadLen)
	if n == 0 {
		c.Pass()
		return
	}
	queue := time.Duration(a.Queue)
	if queue == 0 {
		queue = DefaultPaceQueue
	}
	free := c.RuleVar() // when the link is free again, in ns since the Unix epoch
	now := c.Now().UnixNano()
	done := max(*free, now) + n*int64(time.Second)/a.Rate
	wait := time.Duration(done - now)
	if wait > queue {
		c.Drop()
		return
	}
	*free = done
	c.Delay(wait)
}
