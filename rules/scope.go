package rules

import "github.com/finproxy/finproxy/segment"

// queueFromFIN are the phases that only hold once a FIN has been seen.
const queueFromFIN = PhaseAfterClientFIN | PhaseAfterServerFIN | PhaseAfterBothFINs |
	PhaseAckOfClientFIN | PhaseAckOfServerFIN

// QueueScope says which segments the hook must queue for the rules of c to see every
// segment they could act on: QueueControl when every rule requires SYN, FIN or RST (in
// flags or has_flags) and its action needs no other segments (NeedsData); otherwise
// QueueFromFIN when each of the other rules requires a phase that only holds after a FIN;
// otherwise QueueAll. A config without rules needs QueueControl.
func (c *Config) QueueScope() QueueScope {
	scope := QueueControl
	for _, r := range c.Rules {
		scope = max(scope, r.queueScope())
	}
	return scope
}

func (r *Rule) queueScope() QueueScope {
	const control = segment.SYN | segment.FIN | segment.RST
	m := &r.Match
	needsData := false
	if nd, ok := r.Action.(NeedsData); ok && nd.NeedsData() {
		needsData = true
	}
	if !needsData && (m.FlagsSet && m.Flags&control != 0 || m.HasFlags&control != 0) {
		return QueueControl
	}
	if m.Phases&queueFromFIN != 0 {
		return QueueFromFIN
	}
	return QueueAll
}
