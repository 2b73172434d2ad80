package rules

import "github.com/finproxy/finproxy/segment"

// exactMask are the flags Match.Flags compares (ECE and CWR are ignored).
const exactMask = segment.SYN | segment.FIN | segment.RST | segment.PSH | segment.ACK | segment.URG

// Matches reports whether a segment sent by side, seeing phases, satisfies m's side,
// flags, pure-ACK, has-flags, payload and phase conditions. The per-connection and random
// conditions (Nth, Limit, GlobalLimit, Probability) are the engine's:
//
//   - Nth counts, per connection, the segments that satisfy Matches, whether or not an
//     earlier rule acted on them: "the nth client FIN" means the same for every rule.
//   - Limit and GlobalLimit count the times the rule acted.
//   - Probability is drawn last, only for a segment that passed every other condition, from
//     the engine's generator seeded with Config.Seed: the draws, and so the outcome, repeat
//     with the same seed and the same segments.
func (m *Match) Matches(side Side, s *segment.Segment, phases Phase) bool {
	if m.Side != AnySide && m.Side != side {
		return false
	}
	if m.ServerPort != 0 {
		sp := s.Src.Port()
		if side == Client {
			sp = s.Dst.Port()
		}
		if sp != m.ServerPort {
			return false
		}
	}
	if m.ServerAddr.IsValid() {
		sa := s.Src.Addr()
		if side == Client {
			sa = s.Dst.Addr()
		}
		if sa.Unmap() != m.ServerAddr {
			return false
		}
	}
	if m.FlagsSet && s.Flags&exactMask != m.Flags&exactMask {
		return false
	}
	if m.PureACK && !s.IsPureACK() {
		return false
	}
	if !s.Flags.Has(m.HasFlags) {
		return false
	}
	switch {
	case m.Payload > 0 && s.PayloadLen == 0:
		return false
	case m.Payload < 0 && s.PayloadLen != 0:
		return false
	}
	return phases&m.Phases == m.Phases
}
