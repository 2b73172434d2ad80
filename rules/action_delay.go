package rules

import "time"

func init() { Register("delay", func() Action { return &DelayAction{} }) }

// DelayAction accepts the segment after a while.
//
//	action = "delay"
//	delay = "200ms"   # required, more than 0
//	jitter = "50ms"   # optional: add a uniform random amount in [-jitter, +jitter], drawn
//	                  # from the config's seed; the total is never negative
type DelayAction struct {
	Delay  Duration `toml:"delay"`
	Jitter Duration `toml:"jitter"`
}

// Validate checks that a delay was given.
func (a *DelayAction) Validate() error {
	if a.Delay <= 0 {
		return paramError{"delay", "is required and must be more than 0 (such as \"200ms\")"}
	}
	if a.Jitter < 0 {
		return paramError{"jitter", "must not be negative"}
	}
	return nil
}

// Apply delays the segment.
func (a *DelayAction) Apply(c *Context) {
	c.Delay(a.total(c))
}

func (a *DelayAction) total(c *Context) time.Duration {
	d := time.Duration(a.Delay)
	if j := int64(a.Jitter); j > 0 {
		d += time.Duration(c.Rand().Int64N(2*j+1) - j)
	}
	return max(d, 0)
}
