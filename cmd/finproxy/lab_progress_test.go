package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"

	"github.com/finproxy/finproxy/internal/scenario"
)

// On a terminal, progress rewrites one line in place (and a failure gets a line of its
// own); otherwise every run is one plain line, without an escape code or a carriage return.
func TestPrintProgress(t *testing.T) {
	pass := &scenario.RunReport{Run: 1, Pass: true, DurationMS: 1234.5}
	fail := &scenario.RunReport{Run: 2, Failures: []string{"client states: want CLOSING; saw FIN_WAIT2"}, DurationMS: 980}

	var plain strings.Builder
	printProgress(&plain, false, 1, 3, 1, pass)
	printProgress(&plain, false, 2, 3, 1, fail)
	want := "run 1 of 3: pass in 1234 ms\nrun 2 of 3: FAIL in 980 ms\n"
	if plain.String() != want {
		t.Errorf("not a terminal:\n got %q\nwant %q", plain.String(), want)
	}
	if strings.ContainsAny(plain.String(), "\x1b\r") {
		t.Errorf("escape codes without a terminal: %q", plain.String())
	}

	var tty strings.Builder
	printProgress(&tty, true, 1, 3, 1, pass)
	printProgress(&tty, true, 2, 3, 1, fail)
	want = "\r\x1b[Krun 1 of 3: pass (1 passed so far)" +
		"\r\x1b[Krun 2 of 3: FAIL (1 passed so far)\n  run 2: client states: want CLOSING; saw FIN_WAIT2\n"
	if tty.String() != want {
		t.Errorf("terminal:\n got %q\nwant %q", tty.String(), want)
	}
}

// A failed run's summary says, besides what failed and the states, what the observer
// warned about and what the kernels counted in that run: what a CI log needs to explain
// a run that failed once in twenty.
func TestPrintLabSummaryFailedRun(t *testing.T) {
	rep := &scenario.LabReport{Scenario: "lost-final-ack", Passed: 1, Failed: 1, Runs: []*scenario.RunReport{
		{Run: 1, Pass: true},
		{Run: 2, Failures: []string{"server retransmits: want one in LAST_ACK; saw none"},
			Connections: []scenario.ConnReport{{
				Client: scenario.SideReport{States: []string{"ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"}},
				Server: scenario.SideReport{States: []string{"ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"}},
			}},
			Warnings: []string{"observe: tracefs: instance removed"},
			Records: []rules.Record{{Time: 1_000_000, Client: netip.MustParseAddrPort("198.18.1.2:40000"),
				Server: netip.MustParseAddrPort("198.18.2.2:8080"), Side: rules.Client, Flags: segment.ACK,
				Seq: 1002, Ack: 2, Rule: "drop-final-ack", Action: "drop", Verdict: rules.Drop}},
			Kernel: &scenario.KernelReport{Server: scenario.KernelSide{
				Counters: map[string]int64{"TcpRetransSegs": 1},
				Notes:    []string{"TcpRetransSegs +1: segment retransmitted"},
			}},
		},
	}}
	var b strings.Builder
	printLabSummary(&b, rep)
	out := b.String()
	for _, want := range []string{
		"  run 2 failed:\n    - server retransmits: want one in LAST_ACK; saw none\n",
		"    server: ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSE\n",
		"    what happened:\n",
		"DROPPED by drop-final-ack",
		"    warning: observe: tracefs: instance removed\n",
		"    kernel, server: TcpRetransSegs +1: segment retransmitted\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "run 1 failed") {
		t.Errorf("a passed run is listed as failed:\n%s", out)
	}
}
