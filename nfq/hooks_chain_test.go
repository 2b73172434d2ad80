package nfq

import (
	"strings"
	"testing"
)

// Two sets of hooks for one queue in two chains coexist (finproxy serve widens its hooks
// this way, without a gap), and removing one leaves the other whole.
func TestInstallTwoChainsOneQueue(t *testing.T) {
	f := NewFake()
	a := NewHookSpec(Forward, 7400)
	a.Port = 8080
	b := a
	b.Scope, b.Chain = All, ChainName(7400)+"-B"
	ha, err := Install(f, nil, a)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := Install(f, nil, b)
	if err != nil {
		t.Fatal(err)
	}
	rulesOf := func() string { return strings.Join(f.Rules(), "\n") }
	if r := rulesOf(); !strings.Contains(r, "-N FINPROXY-Q7400\n") || !strings.Contains(r, "-N FINPROXY-Q7400-B") {
		t.Fatalf("both chains should exist:\n%s", r)
	}
	if err := ha.Remove(); err != nil {
		t.Fatal(err)
	}
	r := rulesOf()
	if strings.Contains(r, "FINPROXY-Q7400 ") || strings.Contains(r, "-N FINPROXY-Q7400\n") {
		t.Errorf("the first chain's rules left:\n%s", r)
	}
	for _, want := range hb.Rules() {
		chainRule := strings.TrimPrefix(want, "ipv4: ")
		if !strings.Contains(r, strings.TrimPrefix(chainRule, "-N ")) {
			t.Errorf("after removing the first hooks, the second lack %q:\n%s", chainRule, r)
		}
	}
	if err := hb.Remove(); err != nil {
		t.Fatal(err)
	}
	if r := rulesOf(); strings.Contains(r, "FINPROXY") {
		t.Errorf("rules left:\n%s", r)
	}
	bad := a
	bad.Chain = "MYCHAIN"
	if _, err := Install(f, nil, bad); err == nil || !strings.Contains(err.Error(), "starting with FINPROXY") {
		t.Errorf("chain outside finproxy's names: %v", err)
	}
}
