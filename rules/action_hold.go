package rules

import "time"

func init() { Register("hold", func() Action { return &HoldAction{} }) }

// HoldAction keeps the segment until an event has been seen on its connection, judged from
// the segment's sender (peer-fin: the other side's FIN), or until a timeout. Prefer it to a
// fixed delay: the outcome then does not depend on how fast the applications are.
//
//	action = "hold"
//	until = "peer-fin"    # required: peer-fin | own-fin | client-fin | server-fin | both-fins
//	timeout = "2s"        # required: how long at most, if the event does not come
//	on_timeout = "pass"   # or "drop"; default pass
//
// The event is checked at once (already seen: the segment passes now), then after every
// later segment of the connection. A segment released by the event passes before the
// segment that brought the event.
//
// The timeout has no default: it decides which scenario a run shows when the event does
// not come (the segment then passes late, or is lost), and no value fits every use: a
// hold shorter than the sender's 200 ms retransmission timeout sees no retransmission, one
// longer than 60 s outlives FIN_WAIT2 and TIME_WAIT. (It defaulted to 2 s, silently.)
type HoldAction struct {
	Until     Event    `toml:"until"`
	Timeout   Duration `toml:"timeout,positive"`
	OnTimeout Verdict  `toml:"on_timeout"`
}

// Validate checks that an event and a timeout were given.
func (a *HoldAction) Validate() error {
	if a.Until == EventNone {
		return paramError{"until", "is required: peer-fin, own-fin, client-fin, server-fin or both-fins"}
	}
	if a.OnTimeout != Accept && a.OnTimeout != Drop {
		return paramError{"on_timeout", "must be pass or drop"}
	}
	if a.Timeout <= 0 {
		return paramError{"timeout", "is required: how long to hold the segment if the event does not come (such as \"2s\"); on_timeout then says whether it passes (default) or is dropped"}
	}
	return nil
}

// Apply holds the segment.
func (a *HoldAction) Apply(c *Context) {
	ev, side := a.Until, c.Side
	c.Hold(Hold{
		Until:     func(conn *Conn) bool { return conn.EventSeen(ev, side) },
		OnRelease: Accept,
		Timeout:   time.Duration(a.Timeout),
		OnTimeout: a.OnTimeout,
		Kind:      KindHold,
	})
}
