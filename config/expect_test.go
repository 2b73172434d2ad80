package config

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

func ptr[T any](v T) *T { return &v }

func TestExpectGood(t *testing.T) {
	path := filepath.Join("testdata", "good", "expect.toml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Expect{
		LeakThreshold: 2 * time.Second,
		Client: &SideExpect{
			States:         []string{"ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"},
			Absent:         []string{"CLOSING"},
			RetransmitsIn:  []string{"FIN_WAIT1"},
			ResetsSent:     ptr(false),
			ResetsReceived: ptr(false),
			MaxDwell:       []Dwell{{"FIN_WAIT2", 10 * time.Millisecond}, {"FIN_WAIT1", 5 * time.Second}},
			CloseWaitLeak:  ptr(false),
			Exit:           ptr(0),
			Pos:            rules.Position{File: path, Line: 15, Col: 1},
		},
		Server: &SideExpect{
			States:        []string{"CLOSE_WAIT"},
			NoRetransmits: true,
			MinDwell:      []Dwell{{"CLOSE_WAIT", time.Second}},
			CloseWaitLeak: ptr(true),
			Exit:          ptr(3),
			Pos:           rules.Position{File: path, Line: 25, Col: 1},
		},
		Segments: []*SegmentExpect{
			{Match: rules.Match{Side: rules.Client, HasFlags: segment.FIN}, Verdict: ptr(rules.Drop), Rule: "drop-first-client-fin",
				Min: 1, Max: 1, Pos: rules.Position{File: path, Line: 32, Col: 1}},
			{Match: rules.Match{Side: rules.Server, PureACK: true}, Min: 0, Max: 0, Pos: rules.Position{File: path, Line: 40, Col: 1}},
			{Match: rules.Match{HasFlags: segment.FIN, Payload: 1}, Verdict: ptr(rules.Accept), Min: 1, Max: -1, Pos: rules.Position{File: path, Line: 45, Col: 1}},
		},
		Pos: rules.Position{File: path, Line: 12, Col: 1},
	}
	if !reflect.DeepEqual(cfg.Expect, want) {
		t.Errorf("expect = %+v\nwant %+v", cfg.Expect, want)
		if !reflect.DeepEqual(cfg.Expect.Client, want.Client) {
			t.Errorf("client = %+v\nwant %+v", cfg.Expect.Client, want.Client)
		}
		if !reflect.DeepEqual(cfg.Expect.Server, want.Server) {
			t.Errorf("server = %+v\nwant %+v", cfg.Expect.Server, want.Server)
		}
		for i := range min(len(cfg.Expect.Segments), len(want.Segments)) {
			if !reflect.DeepEqual(cfg.Expect.Segments[i], want.Segments[i]) {
				t.Errorf("segment[%d] = %+v\nwant %+v", i+1, cfg.Expect.Segments[i], want.Segments[i])
			}
		}
	}
	if cfg, err := Load(filepath.Join("testdata", "good", "minimal.toml")); err != nil || cfg.Expect != nil {
		t.Errorf("minimal.toml: expect %+v, %v; want nil", cfg.Expect, err)
	}
}

func TestExpectParse(t *testing.T) {
	const head = "target.port = 1\n"
	tests := []struct {
		name    string
		src     string
		wantErr string
		check   func(t *testing.T, e *Expect)
	}{
		{
			name: "empty section",
			src:  head + "[expect]\n",
			check: func(t *testing.T, e *Expect) {
				if e.LeakThreshold != DefaultLeakThreshold || e.Client != nil || e.Server != nil || e.Segments != nil || e.Pos.Line != 2 {
					t.Errorf("expect = %+v", e)
				}
			},
		},
		{
			name: "dotted and inline forms",
			src:  head + "expect.server.states = 'LAST_ACK'\nexpect.segment = [{ has_flags = 'RST', max = 0 }]\n",
			check: func(t *testing.T, e *Expect) {
				if !reflect.DeepEqual(e.Server.States, []string{"LAST_ACK"}) || len(e.Segments) != 1 ||
					e.Segments[0].Min != 0 || e.Segments[0].Max != 0 || e.Segments[0].Match.HasFlags != segment.RST {
					t.Errorf("expect = %+v", e)
				}
			},
		},
		{
			name: "only min",
			src:  head + "[[expect.segment]]\nmin = 3\n",
			check: func(t *testing.T, e *Expect) {
				if s := e.Segments[0]; s.Min != 3 || s.Max != -1 {
					t.Errorf("segment = %+v", s)
				}
			},
		},
		{
			name: "pass is accept; repeated states allowed",
			src:  head + "[[expect.segment]]\nverdict = 'pass'\n[expect.client]\nstates = ['ESTABLISHED', 'ESTABLISHED']\n",
			check: func(t *testing.T, e *Expect) {
				if *e.Segments[0].Verdict != rules.Accept || len(e.Client.States) != 2 {
					t.Errorf("expect = %+v", e)
				}
			},
		},
		{
			name:    "not tables",
			src:     head + "[expect]\nclient = 1\nsegment = { side = 'client' }\n",
			wantErr: "t.toml:3:10: expect.client: must be a table, not an integer (1)\nt.toml:4:11: expect.segment: must be an array of tables ([[segment]]), not a table",
		},
		{
			name:    "expect not a table",
			src:     head + "expect = []\n",
			wantErr: "t.toml:2:10: expect: must be a table, not an array",
		},
		{
			name:    "empty lists and tables",
			src:     head + "[expect.client]\nstates = []\nmax_dwell = {}\n",
			wantErr: "t.toml:3:10: expect.client.states: empty list: give at least one, or leave states out\nt.toml:4:13: expect.client.max_dwell: empty table: give at least one state, such as { FIN_WAIT2 = \"10ms\" }, or leave max_dwell out",
		},
		{
			name:    "state element types",
			src:     head + "[expect.server]\nabsent = ['CLOSING', 7]\nstates = 'established'\n",
			wantErr: "t.toml:3:22: expect.server.absent[2]: must be a string, not an integer (7)\nt.toml:4:10: expect.server.states: unknown state \"established\" (did you mean ESTABLISHED? states are LISTEN, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT, CLOSE)",
		},
		{
			name:    "dwell values",
			src:     head + "[expect.server]\nmax_dwell = { LAST_ACK = 5, CLOSE_WAIT = '-1s' }\n",
			wantErr: "t.toml:3:26: expect.server.max_dwell.LAST_ACK: must be a duration string (such as \"250ms\"), not an integer (5)\nt.toml:3:42: expect.server.max_dwell.CLOSE_WAIT: negative duration \"-1s\"",
		},
		{
			name:    "never retransmit in these",
			src:     head + "[expect.server]\nretransmits_in = ['LISTEN', 'FIN_WAIT2', 'CLOSE', 'SYN_RECV']\n",
			wantErr: "t.toml:3:19: expect.server.retransmits_in[1]: no socket retransmits in LISTEN (a listener sends nothing of its own): the expectation can never hold\nt.toml:3:29: expect.server.retransmits_in[2]: no socket retransmits in FIN_WAIT2 (everything it sent, its FIN included, is acknowledged): the expectation can never hold\nt.toml:3:42: expect.server.retransmits_in[3]: no socket retransmits in CLOSE (a closed socket sends nothing): the expectation can never hold",
		},
		{
			name:    "absent against retransmits, min_dwell and close_wait_leak",
			src:     head + "[expect.server]\nabsent = ['CLOSE_WAIT', 'LAST_ACK']\nretransmits_in = 'LAST_ACK'\nmin_dwell = { CLOSE_WAIT = '1s' }\nclose_wait_leak = true\n",
			wantErr: "t.toml:4:18: expect.server.retransmits_in: a retransmission in LAST_ACK needs LAST_ACK, which absent excludes: the expectation can never hold\nt.toml:5:28: expect.server.min_dwell.CLOSE_WAIT: a dwell in CLOSE_WAIT needs CLOSE_WAIT, which absent excludes: the expectation can never hold\nt.toml:6:19: expect.server.close_wait_leak: a leak is a socket held in CLOSE_WAIT, which absent excludes: the expectation can never hold",
		},
		{
			name:    "close_wait_leak false with CLOSE_WAIT absent is fine, leak_threshold zero is not",
			src:     head + "[expect]\nleak_threshold = '0s'\n[expect.server]\nabsent = 'CLOSE_WAIT'\nclose_wait_leak = false\n",
			wantErr: "t.toml:3:18: expect.leak_threshold: must be more than 0 (leave it out for 1s)",
		},
		{
			name:    "exit type",
			src:     head + "[expect.client]\nexit = '0'\n[expect.server]\nexit = -1\n",
			wantErr: "t.toml:3:8: expect.client.exit: must be an exit code (an integer, 0 to 255) or \"stopped\" (the lab stopped it), not the string \"0\"\nt.toml:5:8: expect.server.exit: -1 is out of range: want an exit code, 0 to 255, or \"stopped\"",
		},
		{
			name: "exit stopped",
			src:  head + "[expect.server]\nexit = 'stopped'\n[expect.client]\nexit = 3\n",
			check: func(t *testing.T, e *Expect) {
				if !e.Server.ExitStopped || e.Server.Exit != nil || e.Client.ExitStopped || e.Client.Exit == nil || *e.Client.Exit != 3 {
					t.Errorf("server %+v, client %+v: want the server stopped by the lab and the client's exit 3", e.Server, e.Client)
				}
			},
		},
		{
			name:    "segment keys read as in a rule",
			src:     head + "[[expect.segment]]\nside = 'both'\nflags = 'FIN|ACK'\nhas_flags = 'SYN'\npayload = 'lots'\n",
			wantErr: "t.toml:3:8: expect.segment[1].side: unknown side \"both\" (want client, server or any)\nt.toml:5:13: expect.segment[1].has_flags: SYN is not in flags FIN|ACK: no segment can match\nt.toml:6:11: expect.segment[1].payload: unknown payload \"lots\" (want none, some or any)",
		},
		{
			name:    "segment pure-ack with data",
			src:     head + "[[expect.segment]]\nflags = 'pure-ack'\npayload = 'some'\n",
			wantErr: "t.toml:4:11: expect.segment[1].payload: \"some\" contradicts flags = \"pure-ack\" (which carries no payload): no segment can match",
		},
		{
			name:    "segment counts and rule",
			src:     head + "[[expect.segment]]\nmin = -1\nmax = 1.5\nrule = ' '\n[[expect.segment]]\nrule = 'x'\n",
			wantErr: "t.toml:3:7: expect.segment[1].min: -1 is out of range: want a count, 0 or more\nt.toml:4:7: expect.segment[1].max: must be an integer, not a float (1.5)\nt.toml:5:8: expect.segment[1].rule: must not be empty (leave it out to count segments whatever acted on them)\nt.toml:7:8: expect.segment[2].rule: no rule named \"x\": the config has no [[rule]]",
		},
		{
			name: "segment injected and modified",
			src:  head + "[[expect.segment]]\ninjected = true\nmodified = false\n",
			check: func(t *testing.T, e *Expect) {
				if s := e.Segments[0]; s.Injected == nil || !*s.Injected || s.Modified == nil || *s.Modified {
					t.Errorf("segment = %+v", s)
				}
			},
		},
		{
			name:    "segment injected not a boolean",
			src:     head + "[[expect.segment]]\ninjected = 'yes'\n",
			wantErr: "t.toml:3:12: expect.segment[1].injected: must be a boolean (true or false), not a string (\"yes\")",
		},
		{
			name:    "segment rule not among many",
			src:     head + "[[rule]]\nname = 'a'\naction = 'test-drop'\n[[rule]]\nname = 'b'\naction = 'test-drop'\n[[expect.segment]]\nrule = 'zzz'\n",
			wantErr: "t.toml:9:8: expect.segment[1].rule: no rule named \"zzz\" (rules: a, b)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseWith([]byte(tt.src), "t.toml", testActions())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if cfg.Expect == nil {
					t.Fatal("no expect")
				}
				if tt.check != nil {
					tt.check(t, cfg.Expect)
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

func TestSegmentExpectMatches(t *testing.T) {
	rec := func(side rules.Side, flags segment.Flags, n int, rule string, v rules.Verdict) *rules.Record {
		return &rules.Record{Side: side, Flags: flags, Len: n, Rule: rule, Verdict: v}
	}
	fin := rec(rules.Client, segment.FIN|segment.ACK, 0, "drop-fin", rules.Drop)
	finData := rec(rules.Client, segment.FIN|segment.ACK|segment.PSH, 10, "", rules.Accept)
	ack := rec(rules.Server, segment.ACK, 0, "", rules.Accept)
	data := rec(rules.Server, segment.ACK|segment.PSH, 5, "", rules.Accept)
	rst := rec(rules.Server, segment.RST|segment.ACK, 0, "reset", rules.Accept)
	rst.Injected = true
	merged := rec(rules.Server, segment.FIN|segment.ACK|segment.PSH, 5, "merge", rules.Accept)
	merged.Modified = true
	all := []*rules.Record{fin, finData, ack, data, rst, merged}
	tests := []struct {
		name string
		e    SegmentExpect
		want []*rules.Record
		str  string
	}{
		{"any", SegmentExpect{}, all, "any"},
		{"client FIN", SegmentExpect{Match: rules.Match{Side: rules.Client, HasFlags: segment.FIN}}, []*rules.Record{fin, finData}, "client has FIN"},
		{"injected", SegmentExpect{Injected: ptr(true)}, []*rules.Record{rst}, "injected"},
		{"modified FIN", SegmentExpect{Match: rules.Match{HasFlags: segment.FIN}, Modified: ptr(true)}, []*rules.Record{merged}, "has FIN modified"},
		{"queued, unchanged", SegmentExpect{Match: rules.Match{Side: rules.Server}, Injected: ptr(false), Modified: ptr(false)}, []*rules.Record{ack, data}, "server not injected not modified"},
		{"exact flags", SegmentExpect{Match: rules.Match{Flags: segment.FIN | segment.ACK, FlagsSet: true}}, []*rules.Record{fin}, "flags FIN|ACK"},
		{"pure ack", SegmentExpect{Match: rules.Match{PureACK: true}}, []*rules.Record{ack}, "pure-ack"},
		{"with data", SegmentExpect{Match: rules.Match{Payload: 1}}, []*rules.Record{finData, data, merged}, "with data"},
		{"without data", SegmentExpect{Match: rules.Match{Payload: -1}}, []*rules.Record{fin, ack, rst}, "without data"},
		{"verdict", SegmentExpect{Verdict: ptr(rules.Drop)}, []*rules.Record{fin}, "verdict drop"},
		{"accept", SegmentExpect{Match: rules.Match{Side: rules.Server}, Verdict: ptr(rules.Accept)}, []*rules.Record{ack, data, rst, merged}, "server verdict accept"},
		{"rule", SegmentExpect{Rule: "drop-fin", Match: rules.Match{HasFlags: segment.FIN}}, []*rules.Record{fin}, "has FIN rule drop-fin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*rules.Record
			for _, r := range all {
				if tt.e.Matches(r) {
					got = append(got, r)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("matches %+v, want %+v", got, tt.want)
			}
			if s := tt.e.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
		})
	}
}
