package rules

import (
	"fmt"

	"github.com/finproxy/finproxy/segment"
)

// NeedsHandshake is implemented by actions that must see a connection's handshake (its
// SYN and SYN|ACK) whatever the rule's flags and phases say: for example replay, which
// waits for the next incarnation's handshake.
type NeedsHandshake interface {
	NeedsHandshake() bool
}

// HandshakeNeed says whether the hook must queue SYN segments (the SYN and the SYN|ACK of
// every connection) for the rules of c, and why: the first rule that needs them, with
// the reason, or that none does. A rule does not need them when it can only match
// segments of the teardown: it requires a FIN or a RST (flags, has_flags), or a phase
// that only holds once a FIN was seen (after-*-fin, ack-of-*-fin), and its action needs
// neither the handshake nor every segment from the SYN on (QueueAll). The tracker then
// learns a connection from its first queued segment, the server being the side on the
// target's port. A config without rules queues no SYN.
func (c *Config) HandshakeNeed() (need bool, why string) {
	for _, r := range c.Rules {
		if ok, reason := r.needsHandshake(); ok {
			return true, fmt.Sprintf("rule %s %s", r.Name, reason)
		}
	}
	if len(c.Rules) == 0 {
		return false, "no rule"
	}
	return false, "every rule acts on the teardown only"
}

func (r *Rule) needsHandshake() (bool, string) {
	m := &r.Match
	if nh, ok := r.Action.(NeedsHandshake); ok && nh.NeedsHandshake() {
		return true, fmt.Sprintf("(action %s needs the handshake)", r.ActionName)
	}
	if r.queueScope() == QueueAll {
		return true, "needs every segment from the SYN on (it requires no FIN, RST or phase after a FIN)"
	}
	const teardown = segment.FIN | segment.RST
	switch {
	case m.FlagsSet && m.Flags&segment.SYN != 0:
		return true, "matches SYN segments (flags)"
	case m.HasFlags&segment.SYN != 0:
		return true, "matches SYN segments (has_flags)"
	case m.Phases&PhaseHandshake != 0:
		// A connection learnt from a later segment is past its handshake.
		return true, "requires phase handshake"
	case m.FlagsSet && m.Flags&teardown != 0, m.HasFlags&teardown != 0, m.Phases&queueFromFIN != 0:
		// Phase established still holds for the first FIN of a connection learnt from it.
		return false, ""
	}
	return true, "may match a SYN or SYN|ACK (no FIN, RST or after-FIN condition)"
}
