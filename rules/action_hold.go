package rules

import "time"

func init() { Register("hold", func() Action { return &HoldAction{} }) }

// HoldAction keeps the segment until an event has been seen on its connection, judged from
// the segment's sender (peer-fin: the other side's FIN), or until a timeout. Prefer it to a
// fixed delay: the outcome then does not depend on how fast the applications are.
//
//	action = "hold"
//	until = "peer-fin"    # required: peer-fin | own-fin | client-fin | server-fin | both-fins
//	timeout = "2s"        # default 2s (DefaultHoldTimeout)
//	on_timeout = "pass"   # or "drop"; default pass
//
// The event is checked at once (already seen: the segment passes now), then after every
// later segment of the connection. A segment released by the event passes before the
// segment that brought the event.
type HoldAction struct {
	Until     Event    `toml:"until"`
	Timeout   Duration `toml:"timeout"`
	OnTimeout Verdict  `toml:"on_timeout"`
}

// Validate checks that an event was given.
func (a *HoldAction) Validate() error {
	if a.Until == EventNone {
		return paramError{"until", "is required: peer-fin, own-fin, client-fin, server-fin or both-fins"}
	}
	if a.OnTimeout != Accept && a.OnTimeout != Drop {
		return paramError{"on_timeout", "must be pass or drop"}
	}
	return nil
}

// Apply holds the segment.
func (a *HoldAction) Apply(c *Context) {
	ev, side := a.Until, c.Side
	c.Hold(Hold{
		Until:     func(conn *Conn) bool { return conn.EventSeen(ev, side) },
		OnRelease: Accept,
		Timeout:   time.Duration(a.Timeout), // 0: DefaultHoldTimeout
		OnTimeout: a.OnTimeout,
		Kind:      KindHold,
	})
}
