package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/rules"
)

// The scope every preset gets: the presets about the teardown queue no SYN; those whose
// rules act on the handshake or on every segment from the SYN on keep it.
func TestHandshakeNeedPresets(t *testing.T) {
	want := map[string]bool{
		"close-wait-leak": false, "fin-wait-2-hang": false, "four-way-close": false, "half-close": false,
		"lost-fin": false, "lost-final-ack": false, "no-time-wait": false, "simultaneous-close": false,
		"three-way-close": false,
		"fin-with-data":   true, "lost-handshake-ack": true, "lost-syn-ack": true, "old-duplicate": true,
		"reset-injection": true, "time-wait-reuse": true,
	}
	for _, n := range configs.Names() {
		w, ok := want[n]
		if !ok {
			t.Errorf("preset %s: no expected scope in this table", n)
			continue
		}
		data, path, _ := configs.Read(n)
		cfg, err := Parse(data, path)
		if err != nil {
			t.Fatal(err)
		}
		if need, why := cfg.HandshakeNeed(); need != w || why == "" {
			t.Errorf("%s: handshake needed %v (%s), want %v", n, need, why, w)
		}
	}
}

// The test configs, and rules one by one with the reason given.
func TestHandshakeNeedRules(t *testing.T) {
	for _, f := range []string{"full.toml", "minimal.toml", "dotted.toml", "address-only.toml"} {
		cfg, err := Load(filepath.Join("testdata", "good", f))
		if err != nil {
			t.Fatal(err)
		}
		need, why := cfg.HandshakeNeed()
		t.Logf("%s: %v (%s)", f, need, why)
		if why == "" {
			t.Errorf("%s: no reason", f)
		}
	}
	for _, tc := range []struct {
		name, rule string
		need       bool
		why        string
	}{
		{"fin", `has_flags = "FIN"` + "\naction = \"drop\"", false, ""},
		{"rst", `flags = "RST"` + "\naction = \"drop\"", false, ""},
		{"ack of fin", `flags = "pure-ack"` + "\nphase = \"ack-of-server-fin\"\naction = \"drop\"", false, ""},
		{"first fin is established", `has_flags = "FIN"` + "\nphase = \"established\"\naction = \"drop\"", false, ""},
		{"syn-ack", `flags = "SYN|ACK"` + "\naction = \"drop\"", true, "matches SYN segments (flags)"},
		{"has syn", `has_flags = "SYN"` + "\naction = \"drop\"", true, "matches SYN segments (has_flags)"},
		{"every segment", `side = "server"` + "\naction = \"drop\"", true, "needs every segment from the SYN on"},
		{"pure ack", `flags = "pure-ack"` + "\naction = \"drop\"", true, "needs every segment from the SYN on"},
		{"handshake phase", `phase = "handshake"` + "\nhas_flags = \"RST\"\naction = \"drop\"", true, "requires phase handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "[target]\nport = 8080\n[[rule]]\nname = \"r\"\n" + tc.rule + "\n"
			cfg, err := Parse([]byte(src), "t.toml")
			if err != nil {
				t.Fatal(err)
			}
			need, why := cfg.HandshakeNeed()
			if need != tc.need || (tc.need && !strings.Contains(why, tc.why)) {
				t.Errorf("need %v (%s), want %v (%s)", need, why, tc.need, tc.why)
			}
		})
	}
	if need, why := (&rules.Config{}).HandshakeNeed(); need || why != "no rule" {
		t.Errorf("no rules: %v %s", need, why)
	}
}
