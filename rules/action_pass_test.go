package rules

import (
	"fmt"
	"slices"
	"testing"
)

func TestBuiltinActionsRegistered(t *testing.T) {
	for name, want := range map[string]Action{
		"pass":  &PassAction{},
		"drop":  &DropAction{},
		"delay": &DelayAction{},
		"hold":  &HoldAction{},
		"merge": &MergeAction{},
	} {
		a, ok := NewAction(name)
		if !ok {
			t.Errorf("%s is not registered", name)
			continue
		}
		if got, want := typeName(a), typeName(want); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
		if !slices.Contains(Actions(), name) {
			t.Errorf("Actions() lacks %s", name)
		}
	}
}

func typeName(a Action) string { return fmt.Sprintf("%T", a) }

func TestPassAction(t *testing.T) {
	h := newHarness(t, cfgOf(rule("count-syn", Match{HasFlags: fSYN}, "pass", &PassAction{})), Options{})
	h.handle(seg(testClient, testServer, fSYN, 1, 0, 0))
	h.wantEvents("1 client SYN accept count-syn/pass")
	h.wantCounters(Counters{Rule: "count-syn", Matched: 1, Passed: 1})
}
