package tcpstate

import "testing"

// Every state's name parses back to it, with or without the kernel's TCP_ prefix.
func TestNamesRoundTrip(t *testing.T) {
	for s := Unknown; s <= NewSynRecv; s++ {
		for _, name := range []string{s.String(), "TCP_" + s.String()} {
			if got, err := Parse(name); err != nil || got != s {
				t.Errorf("Parse(%q) = %v, %v; want %v", name, got, err, s)
			}
		}
	}
	if _, err := Parse("FIN_WAIT3"); err == nil {
		t.Error("Parse accepted FIN_WAIT3")
	}
	if got := State(99).String(); got != "STATE(99)" {
		t.Errorf("State(99) = %q", got)
	}
}

// The states [expect] takes are every state a connection's socket can be in: all but
// UNKNOWN and a request socket's NEW_SYN_RECV, each once.
func TestExpectable(t *testing.T) {
	seen := map[State]bool{}
	for _, s := range Expectable {
		if seen[s] || s == Unknown || s == NewSynRecv {
			t.Errorf("Expectable has %v", s)
		}
		seen[s] = true
	}
	if len(seen) != int(NewSynRecv)-1 {
		t.Errorf("Expectable has %d states, want %d", len(seen), int(NewSynRecv)-1)
	}
}
