package scenario

import (
	"slices"
	"strings"
	"testing"
)

func TestKernelDelta(t *testing.T) {
	before := [2]map[string]int64{
		{"TcpOutRsts": 4, "TcpCurrEstab": 1, "TcpInSegs": 100},
		{"TcpExtPAWSEstab": 7, "TcpMaxConn": -1, "TcpExtTW": 3},
	}
	after := [2]map[string]int64{
		{"TcpOutRsts": 5, "TcpCurrEstab": 0, "TcpInSegs": 109, "TcpExtTCPLossProbes": 2},
		{"TcpExtPAWSEstab": 8, "TcpMaxConn": -1, "TcpExtTW": 3},
	}
	k := kernelDelta(before, after)
	if k == nil {
		t.Fatal("nil report")
	}
	// A counter that appears only after counts from zero; gauges are left out.
	if want := map[string]int64{"TcpOutRsts": 1, "TcpInSegs": 9, "TcpExtTCPLossProbes": 2}; !equalCounters(k.Client.Counters, want) {
		t.Errorf("client counters %v, want %v", k.Client.Counters, want)
	}
	if want := map[string]int64{"TcpExtPAWSEstab": 1}; !equalCounters(k.Server.Counters, want) {
		t.Errorf("server counters %v, want %v", k.Server.Counters, want)
	}
	// Notes in the order of the notable list, unremarkable counters (InSegs) without one.
	if len(k.Client.Notes) != 2 || !strings.HasPrefix(k.Client.Notes[0], "TcpExtTCPLossProbes +2: tail loss probe") || !strings.HasPrefix(k.Client.Notes[1], "TcpOutRsts +1: RST sent") {
		t.Errorf("client notes %q", k.Client.Notes)
	}
	if len(k.Server.Notes) != 1 || !strings.HasPrefix(k.Server.Notes[0], "TcpExtPAWSEstab +1: segment dropped by PAWS") {
		t.Errorf("server notes %q", k.Server.Notes)
	}
	if kernelDelta([2]map[string]int64{nil, before[1]}, after) != nil {
		t.Error("a missing snapshot gave a report")
	}

	rep := &LabReport{Runs: []*RunReport{{Kernel: k}, {}, {Kernel: k}}}
	tot := rep.KernelTotals()
	if tot.Server.Counters["TcpExtPAWSEstab"] != 2 || !slices.Equal(tot.Server.Notes[:1], []string{"TcpExtPAWSEstab +2: " + notable[0].means}) {
		t.Errorf("totals: %+v", tot.Server)
	}
	if (&LabReport{Runs: []*RunReport{{}}}).KernelTotals() != nil {
		t.Error("totals without any counters")
	}
}

func equalCounters(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func TestClip(t *testing.T) {
	short := "one line\n"
	if clip(short) != short {
		t.Errorf("short output changed: %q", clip(short))
	}
	long := ""
	for len(long) < 2*maxAppOutput {
		long += "0123456789abcdef0123456789abcdef\n"
	}
	got := clip(long)
	if len(got) > maxAppOutput+100 || !strings.HasPrefix(long, got[:maxAppOutput-40]) {
		t.Errorf("clipped to %d bytes", len(got))
	}
	if want := "more bytes not kept]\n"; got[len(got)-len(want):] != want {
		t.Errorf("no note at the end: %q", got[len(got)-60:])
	}
}
