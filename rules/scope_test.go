package rules

import (
	"testing"

	"github.com/finproxy/finproxy/segment"
)

// Actions that do not say whether they need data segments (as drop), that need them (as
// merge), and that say they do not.
type (
	scopeDrop   struct{}
	scopeMerge  struct{}
	scopeNoData struct{}
)

func (*scopeDrop) Apply(*Context)    {}
func (*scopeMerge) Apply(*Context)   {}
func (*scopeMerge) NeedsData() bool  { return true }
func (*scopeNoData) Apply(*Context)  {}
func (*scopeNoData) NeedsData() bool { return false }

func TestQueueScope(t *testing.T) {
	var (
		drop   = &scopeDrop{}
		merge  = &scopeMerge{}
		nodata = &scopeNoData{}
	)
	rule := func(m Match, a Action) *Rule { return &Rule{Name: "r", Match: m, Action: a} }
	tests := []struct {
		name  string
		rules []*Rule
		want  QueueScope
	}{
		{"no rules", nil, QueueControl},
		{"has FIN", []*Rule{rule(Match{HasFlags: segment.FIN}, drop)}, QueueControl},
		{"exact SYN|ACK", []*Rule{rule(Match{Flags: segment.SYN | segment.ACK, FlagsSet: true}, drop)}, QueueControl},
		{"has RST|ACK", []*Rule{rule(Match{HasFlags: segment.RST | segment.ACK}, drop)}, QueueControl},
		{"NeedsData false", []*Rule{rule(Match{HasFlags: segment.FIN}, nodata)}, QueueControl},
		{"flags not set", []*Rule{rule(Match{Flags: segment.FIN}, drop)}, QueueAll},
		{"exact ACK", []*Rule{rule(Match{Flags: segment.ACK, FlagsSet: true}, drop)}, QueueAll},
		{"exact none", []*Rule{rule(Match{FlagsSet: true}, drop)}, QueueAll},
		{"pure ACK", []*Rule{rule(Match{PureACK: true}, drop)}, QueueAll},
		{"has PSH", []*Rule{rule(Match{HasFlags: segment.PSH}, drop)}, QueueAll},
		{"pure ACK of server FIN", []*Rule{rule(Match{PureACK: true, Phases: PhaseAckOfServerFIN}, drop)}, QueueFromFIN},
		{"data after client FIN", []*Rule{rule(Match{Payload: 1, Phases: PhaseAfterClientFIN}, drop)}, QueueFromFIN},
		{"after server FIN", []*Rule{rule(Match{Phases: PhaseAfterServerFIN}, drop)}, QueueFromFIN},
		{"after both FINs", []*Rule{rule(Match{Phases: PhaseAfterBothFINs}, drop)}, QueueFromFIN},
		{"ack of client FIN", []*Rule{rule(Match{Phases: PhaseAckOfClientFIN}, drop)}, QueueFromFIN},
		{"established", []*Rule{rule(Match{Phases: PhaseEstablished}, drop)}, QueueAll},
		{"handshake", []*Rule{rule(Match{Phases: PhaseHandshake}, drop)}, QueueAll},
		{"merge on FIN", []*Rule{rule(Match{HasFlags: segment.FIN}, merge)}, QueueAll},
		{"merge on FIN after client FIN", []*Rule{rule(Match{HasFlags: segment.FIN, Phases: PhaseAfterClientFIN}, merge)}, QueueFromFIN},
		{"merge on pure ACK of client FIN", []*Rule{rule(Match{PureACK: true, Phases: PhaseAckOfClientFIN}, merge)}, QueueFromFIN},
		{"control and from-FIN", []*Rule{
			rule(Match{HasFlags: segment.FIN}, drop),
			rule(Match{PureACK: true, Phases: PhaseAckOfServerFIN}, drop),
		}, QueueFromFIN},
		{"from-FIN and all", []*Rule{
			rule(Match{PureACK: true, Phases: PhaseAckOfServerFIN}, drop),
			rule(Match{Payload: 1}, drop),
			rule(Match{HasFlags: segment.SYN}, drop),
		}, QueueAll},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Rules: tt.rules}
			if got := c.QueueScope(); got != tt.want {
				t.Errorf("QueueScope() = %s, want %s", got, tt.want)
			}
		})
	}
}
