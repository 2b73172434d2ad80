package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/golden"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// Test-only actions. Their parameters are named t_... so that they do not show up in the
// messages about the real actions' parameters.

type testDrop struct{}

func (*testDrop) Apply(*rules.Context) {}

type testDelay struct {
	Delay  rules.Duration `toml:"t_delay"`
	Jitter rules.Duration `toml:"t_jitter"`
	Step   time.Duration  `toml:"t_step"`
	Count  int8           `toml:"t_count"`
	Tags   []string       `toml:"t_tags"`
	Side   rules.Side     `toml:"t_side"`
	Ignore string         `toml:"-"`
}

func (*testDelay) Apply(*rules.Context) {}

func (d *testDelay) Validate() error {
	if d.Delay == 0 {
		return errors.New("t_delay: required")
	}
	if d.Jitter > d.Delay {
		return errors.New("t_jitter must not exceed t_delay")
	}
	return nil
}

type testParamError struct {
	param string
	err   error
}

func (e *testParamError) Error() string { return e.err.Error() }
func (e *testParamError) Param() string { return e.param }

type testHold struct {
	Until     string         `toml:"t_until"`
	Timeout   rules.Duration `toml:"t_timeout"`
	OnTimeout rules.Verdict  `toml:"t_on_timeout"`
	until     rules.Event
}

func (*testHold) Apply(*rules.Context) {}

func (h *testHold) Validate() error {
	e, err := rules.ParseEvent(h.Until)
	if err != nil {
		return &testParamError{"t_until", err}
	}
	h.until = e
	return nil
}

type testMerge struct {
	Timeout rules.Duration `toml:"t_timeout"`
}

func (*testMerge) Apply(*rules.Context) {}
func (*testMerge) NeedsData() bool      { return true }

type testNoData struct{}

func (*testNoData) Apply(*rules.Context) {}
func (*testNoData) NeedsData() bool      { return false }

// testActions are the engine's actions and this package's test actions: the configs of
// the tests parse with them (ParseWith); the golden files of testdata/bad, with the
// engine's alone, so that the list of actions some messages give is the real one.
// (Built at first use: the engine's actions register in init functions, after the
// package's variables are set.)
var testActions = sync.OnceValue(func() *rules.Registry {
	r := rules.DefaultRegistry().Clone()
	r.Register("test-drop", func() rules.Action { return &testDrop{} })
	r.Register("test-delay", func() rules.Action { return &testDelay{} })
	r.Register("test-hold", func() rules.Action { return &testHold{} })
	r.Register("test-merge", func() rules.Action { return &testMerge{} })
	r.Register("test-nodata", func() rules.Action { return &testNoData{} })
	return r
})

// TestConfigBad checks every file of testdata/bad against its golden error text.
func TestConfigBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("only %d files in testdata/bad", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			cfg, err := Load(file)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", file, cfg)
			}
			if cfg != nil {
				t.Errorf("Load(%s) returned a config with its error", file)
			}
			var errs ConfigErrors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Load(%s) error is %T, want ConfigErrors", file, err)
			}
			golden.Check(t, strings.TrimSuffix(file, ".toml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ruleView is what TestConfigGood compares of a rule: everything but the action's value.
type ruleView struct {
	Name   string
	Match  rules.Match
	Action string
	Line   int
	Col    int
}

func viewRules(rs []*rules.Rule) []ruleView {
	var v []ruleView
	for _, r := range rs {
		v = append(v, ruleView{r.Name, r.Match, r.ActionName, r.Pos.Line, r.Pos.Col})
	}
	return v
}

func TestConfigGood(t *testing.T) {
	tests := []struct {
		file        string
		name, descr string
		seed        int64
		target      rules.Target
		rules       []ruleView
	}{
		{
			file:   "minimal.toml",
			name:   "minimal",
			target: rules.Target{Port: 8080, Hook: rules.HookLocal, Queue: rules.DefaultQueue},
		},
		{
			file:  "full.toml",
			name:  "everything",
			descr: "every key of the format",
			seed:  42,
			target: rules.Target{
				Port:      8080,
				Addresses: []netip.Prefix{mustPrefix(t, "198.18.2.2/32"), mustPrefix(t, "fd00::2/128"), mustPrefix(t, "198.18.0.0/16")},
				Hook:      rules.HookForward,
				Queue:     7401,
			},
			rules: []ruleView{
				{"drop-final-ack", rules.Match{Side: rules.Client, PureACK: true, Phases: rules.PhaseAfterBothFINs | rules.PhaseAckOfServerFIN,
					Nth: 1, Probability: 0.5, Limit: 1, GlobalLimit: 10}, "drop", 12, 1},
				{"hold-server-fin", rules.Match{Side: rules.Server, Flags: segment.FIN | segment.ACK, FlagsSet: true, HasFlags: segment.FIN,
					Payload: -1, Phases: rules.PhaseAfterClientFIN}, "hold", 23, 1},
				{"delay-data", rules.Match{HasFlags: segment.ACK, Payload: 1}, "delay", 35, 1},
				{"merge-ack", rules.Match{Side: rules.Server, PureACK: true, Phases: rules.PhaseAckOfClientFIN}, "merge", 44, 1},
			},
		},
		{
			file:   "address-only.toml",
			name:   "address-only",
			target: rules.Target{Addresses: []netip.Prefix{mustPrefix(t, "fd00::2/128")}, Hook: rules.HookLocal, Queue: 1},
			rules: []ruleView{
				{"drop-rst", rules.Match{HasFlags: segment.RST}, "drop", 4, 3},
				{"pass-syn", rules.Match{Flags: segment.SYN, FlagsSet: true}, "pass", 5, 3},
			},
		},
		{
			file:   "dotted.toml",
			name:   "dotted",
			target: rules.Target{Port: 443, Hook: rules.HookLocal, Queue: rules.DefaultQueue},
			rules:  []ruleView{{"drop-fin", rules.Match{HasFlags: segment.FIN}, "drop", 6, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "good", tt.file)
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.File != path || cfg.Name != tt.name || cfg.Description != tt.descr || cfg.Seed != tt.seed {
				t.Errorf("file, name, description, seed = %q, %q, %q, %d; want %q, %q, %q, %d",
					cfg.File, cfg.Name, cfg.Description, cfg.Seed, path, tt.name, tt.descr, tt.seed)
			}
			if !reflect.DeepEqual(cfg.Target, tt.target) {
				t.Errorf("target = %+v\nwant %+v", cfg.Target, tt.target)
			}
			if got := viewRules(cfg.Rules); !reflect.DeepEqual(got, tt.rules) {
				t.Errorf("rules = %+v\nwant %+v", got, tt.rules)
			}
			for _, r := range cfg.Rules {
				if r.Action == nil || r.Pos.File != path {
					t.Errorf("rule %s: action %v, pos %v", r.Name, r.Action, r.Pos)
				}
			}
		})
	}
}

// TestConfigPresets loads the presets of configs/: they must stay valid.
func TestConfigPresets(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.toml")
	for _, file := range files {
		if _, err := Load(file); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// TestConfigParse covers what needs no real action: action parameters, Validate, positions
// in unusual layouts, and the messages.
func TestConfigParse(t *testing.T) {
	const head = "[target]\nport = 1\n[[rule]]\nname = \"r\"\n" // the rule starts at line 3
	tests := []struct {
		name    string
		src     string
		wantErr string // "" for success; else the whole error text, file "t.toml"
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "params decoded",
			src: head + `action = "test-delay"
t_delay = "200ms"
t_jitter = "50ms"
t_step = "1s"
t_count = 3
t_tags = ["a", "b"]
t_side = "server"`,
			check: func(t *testing.T, c *Config) {
				want := &testDelay{Delay: rules.Duration(200 * time.Millisecond), Jitter: rules.Duration(50 * time.Millisecond),
					Step: time.Second, Count: 3, Tags: []string{"a", "b"}, Side: rules.Server}
				if got := c.Rules[0].Action; !reflect.DeepEqual(got, want) {
					t.Errorf("action = %+v, want %+v", got, want)
				}
				if c.Rules[0].ActionName != "test-delay" || c.Rules[0].Pos != (rules.Position{File: "t.toml", Line: 3, Col: 1}) {
					t.Errorf("rule = %+v", c.Rules[0])
				}
			},
		},
		{
			name: "every action gets a fresh instance",
			src: "[target]\nport = 1\n" +
				"[[rule]]\nname = \"a\"\naction = \"test-delay\"\nt_delay = \"1s\"\n" +
				"[[rule]]\nname = \"b\"\naction = \"test-delay\"\nt_delay = \"2s\"\n",
			check: func(t *testing.T, c *Config) {
				a, b := c.Rules[0].Action.(*testDelay), c.Rules[1].Action.(*testDelay)
				if a == b || a.Delay != rules.Duration(time.Second) || b.Delay != rules.Duration(2*time.Second) {
					t.Errorf("actions %+v %+v", a, b)
				}
			},
		},
		{
			name: "Validate ran",
			src:  head + "action = \"test-hold\"\nt_until = \"own-fin\"\nt_on_timeout = \"drop\"",
			check: func(t *testing.T, c *Config) {
				h := c.Rules[0].Action.(*testHold)
				if h.until != rules.EventOwnFIN || h.OnTimeout != rules.Drop {
					t.Errorf("hold = %+v", h)
				}
			},
		},
		{
			name:    "param type",
			src:     head + "action = \"test-delay\"\nt_delay = 200\nt_count = \"3\"\nt_tags = \"a\"",
			wantErr: "t.toml:6:11: rule[1].t_delay: must be a duration string (such as \"250ms\"), not an integer (200)\nt.toml:7:11: rule[1].t_count: must be an integer, not a string (\"3\")\nt.toml:8:10: rule[1].t_tags: must be an array, not a string (\"a\")",
		},
		{
			name:    "param range",
			src:     head + "action = \"test-delay\"\nt_delay = \"1s\"\nt_count = 300",
			wantErr: "t.toml:7:11: rule[1].t_count: 300 is out of range for int8",
		},
		{
			name:    "param text error",
			src:     head + "action = \"test-delay\"\nt_delay = \"1s\"\nt_side = \"left\"",
			wantErr: "t.toml:7:10: rule[1].t_side: unknown side \"left\" (want client, server or any)",
		},
		{
			name:    "Validate error naming a given param",
			src:     head + "action = \"test-delay\"\nt_delay = \"1s\"\nt_jitter = \"2s\"",
			wantErr: "t.toml:7:12: rule[1].t_jitter: t_jitter must not exceed t_delay",
		},
		{
			name:    "Validate error naming a missing param",
			src:     head + "action = \"test-delay\"",
			wantErr: "t.toml:3:1: rule[1].t_delay: required",
		},
		{
			name:    "Validate error with Param()",
			src:     head + "action = \"test-hold\"\nt_until = \"never\"",
			wantErr: "t.toml:6:11: rule[1].t_until: unknown event \"never\" (want peer-fin, own-fin, client-fin, server-fin or both-fins)",
		},
		{
			name:    "param of another action",
			src:     head + "action = \"test-drop\"\nt_timeout = \"1s\"",
			wantErr: "t.toml:6:1: rule[1].t_timeout: action test-drop has no parameter t_timeout (test-hold and test-merge do)",
		},
		{
			name:    "unknown param with suggestion",
			src:     head + "action = \"test-delay\"\nt_dealy = \"1s\"",
			wantErr: "t.toml:6:1: rule[1].t_dealy: unknown key (did you mean t_delay?)",
		},
		{
			name:    "unknown key, unknown action",
			src:     head + "action = \"nope\"\nt_until = \"x\"\nwhatever = 1",
			wantErr: "t.toml:5:10: rule[1].action: unknown action \"nope\" (want one of " + strings.Join(testActions().Names(), ", ") + ")\nt.toml:7:1: rule[1].whatever: unknown key (known keys: name, side, server_port, server_address, flags, has_flags, payload, phase, nth, probability, limit, global_limit, action, " + strings.Join(newLoader().allParams(), ", ") + ")",
		},
		{
			name:    "case matters",
			src:     "[target]\nPort = 1",
			wantErr: "t.toml:2:1: target.Port: unknown key (did you mean port?)",
		},
		{
			name:    "nested table in a rule",
			src:     head + "action = \"test-drop\"\n[rule.extra]\nx = 1\n",
			wantErr: "t.toml:6:1: rule[1].extra: unknown key (known keys: name, side, server_port, server_address, flags, has_flags, payload, phase, nth, probability, limit, global_limit, action)",
		},
		{
			name:    "wrong types",
			src:     "name = 1\ndescription = [\"a\"]\nseed = 1.5\ntarget = \"x\"\n",
			wantErr: "t.toml:1:8: name: must be a string, not an integer (1)\nt.toml:2:15: description: must be a string, not an array\nt.toml:3:8: seed: must be an integer, not a float (1.5)\nt.toml:4:10: target: must be a table, not a string (\"x\")",
		},
		{
			name:    "rule element not a table",
			src:     "target.port = 1\nrule = [{name = \"a\", action = \"test-drop\"}, 5]",
			wantErr: "t.toml:2:45: rule[2]: must be a table, not an integer (5)",
		},
		{
			name:    "phase list element type and contradiction",
			src:     head + "action = \"test-drop\"\nphase = [\"established\", 3]",
			wantErr: "t.toml:6:25: rule[1].phase[2]: must be a string, not an integer (3)",
		},
		{
			name:    "contradictory phases",
			src:     head + "action = \"test-drop\"\nside = \"client\"\nphase = [\"ack-of-client-fin\"]",
			wantErr: "t.toml:7:9: rule[1].phase: ack-of-client-fin is about segments from the server, but side is client: the rule can never match",
		},
		{
			name:    "established excludes FIN phases",
			src:     head + "action = \"test-drop\"\nphase = [\"established\", \"after-client-fin\"]",
			wantErr: "t.toml:6:9: rule[1].phase: established cannot hold with after-client-fin: the rule can never match",
		},
		{
			name:    "pure-ack with some payload",
			src:     head + "action = \"test-drop\"\nflags = \"pure-ack\"\npayload = \"some\"",
			wantErr: "t.toml:7:11: rule[1].payload: \"some\" contradicts flags = \"pure-ack\" (which carries no payload): the rule can never match",
		},
		{
			name:    "ECE in exact flags",
			src:     head + "action = \"test-drop\"\nflags = \"ACK|ECE\"",
			wantErr: "t.toml:6:9: rule[1].flags: flags compares SYN, FIN, RST, PSH, ACK and URG only: require ECE or CWR with has_flags",
		},
		{
			name: "flags spellings",
			src:  head + "action = \"test-drop\"\nflags = \"fin+ack\"\nhas_flags = \"none\"\npayload = \"any\"\nside = \"any\"",
			check: func(t *testing.T, c *Config) {
				m := c.Rules[0].Match
				if m.Flags != segment.FIN|segment.ACK || !m.FlagsSet || m.HasFlags != 0 || m.Payload != 0 || m.Side != rules.AnySide {
					t.Errorf("match = %+v", m)
				}
			},
		},
		{
			name: "integer probability, mapped address, no name",
			src:  "[target]\naddress = \"::ffff:198.18.2.2\"\n[[rule]]\nname = \"r\"\naction = \"test-drop\"\nprobability = 1",
			check: func(t *testing.T, c *Config) {
				if c.Rules[0].Match.Probability != 1 || c.Target.Addresses[0] != mustPrefix(t, "198.18.2.2/32") || c.Name != "t" {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name:    "empty lists",
			src:     "[target]\naddress = []\n",
			wantErr: "t.toml:2:11: target.address: empty list: give at least one, or leave address out",
		},
		{
			name:    "zone, bad prefix, queue",
			src:     "[target]\naddress = [\"fe80::1%eth0\", \"1.2.3.0/33\"]\nqueue = 0",
			wantErr: "t.toml:2:12: target.address[1]: address \"fe80::1%eth0\" has a zone: leave it out\nt.toml:2:28: target.address[2]: invalid prefix \"1.2.3.0/33\" (write it like \"198.18.2.0/24\" or \"fd00::/64\")\nt.toml:3:9: target.queue: 0 is out of range: want an NFQUEUE number, 1 to 65535 (0 reads as the default, 7400)",
		},
		{
			name:    "syntax error",
			src:     "[target]\nport = = 1",
			wantErr: "t.toml:2:8: expected value but found '=' instead",
		},
		{
			name:    "empty file",
			src:     "",
			wantErr: "t.toml:1:1: target: no scope: give target.port or target.address",
		},
		{
			name:    "multi-line string before the error",
			src:     "description = \"\"\"\nline\n[target]\n\"\"\"\n[target]\nport = 1\n[[rule]]\nname = 'x'\naction = \"test-drop\"\nside = \"top\"",
			wantErr: "t.toml:10:8: rule[1].side: unknown side \"top\" (want client, server or any)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseWith([]byte(tt.src), "t.toml", testActions())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tt.check != nil {
					tt.check(t, cfg)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse = %+v, want error %s", cfg, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("Parse error:\n%s\nwant:\n%s", err, tt.wantErr)
			}
		})
	}
}

// newLoader returns a loader for looking at the registry as Parse sees it.
func newLoader() *loader { return &loader{reg: testActions()} }

func TestConfigErrorText(t *testing.T) {
	e := &ConfigError{Pos: rules.Position{File: "a.toml", Line: 3, Col: 9}, Key: "rule[2].delay", Msg: `invalid duration "2x" (write it like "250ms" or "2s")`}
	if got, want := e.Error(), `a.toml:3:9: rule[2].delay: invalid duration "2x" (write it like "250ms" or "2s")`; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	es := ConfigErrors{e, {Pos: rules.Position{Line: 1, Col: 1}, Msg: "syntax"}}
	if got, want := es.Error(), e.Error()+"\n<config>:1:1: syntax"; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	var ce *ConfigError
	if !errors.As(error(es), &ce) || ce != e {
		t.Errorf("errors.As did not find the first ConfigError")
	}
	if _, err := Load("testdata/no-such-file.toml"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestTargetUnclassified(t *testing.T) {
	for src, want := range map[string]rules.Unclassified{
		"":                        "",
		`unclassified = "drop"`:   rules.UnclassifiedDrop,
		`unclassified = "accept"`: rules.UnclassifiedAccept,
	} {
		cfg, err := Parse([]byte("[target]\nport = 8080\n"+src+"\n"), "u.toml")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if cfg.Target.Unclassified != want {
			t.Errorf("%s: Unclassified = %q, want %q", src, cfg.Target.Unclassified, want)
		}
	}
}
