package rules

import (
	"testing"
	"time"
)

func TestMergeNeedsData(t *testing.T) {
	var a Action = &MergeAction{}
	if nd, ok := a.(NeedsData); !ok || !nd.NeedsData() {
		t.Error("merge does not ask for data segments")
	}
}

// Merge passes what it cannot merge: a segment that is not a pure ACK, and a pure ACK
// sent after its side's FIN.
func TestMergePassesOthers(t *testing.T) {
	h := newHarness(t, cfgOf(rule("merge", Match{Side: Server}, "merge", &MergeAction{Timeout: Duration(time.Second)})), Options{})
	h.handle(seg(testServer, testClient, fPSH|fACK, 1, 1, 10))
	h.handle(seg(testServer, testClient, fFIN|fACK, 11, 1, 0))
	h.handle(seg(testServer, testClient, fACK, 12, 2, 0))
	h.wantEvents(
		"1 server PSH|ACK accept merge/merge",
		"2 server FIN|ACK accept merge/merge",
		"3 server ACK accept merge/merge",
	)
	h.wantCounters(Counters{Rule: "merge", Matched: 3, Passed: 3})
	if h.clk.Pending() != 0 {
		t.Error("a timer was set")
	}
}

// The FIN of the other side does not release a held ACK.
func TestMergeWaitsForOwnFIN(t *testing.T) {
	h := newHarness(t, cfgOf(rule("merge", Match{Side: Server, PureACK: true}, "merge", &MergeAction{})), Options{})
	h.handle(seg(testServer, testClient, fACK, 1, 101, 0))
	h.clk.Advance(time.Millisecond)
	h.handle(seg(testClient, testServer, fFIN|fACK, 101, 1, 0))
	h.clk.Advance(time.Millisecond)
	h.handle(seg(testServer, testClient, fFIN|fACK, 1, 101, 0))
	h.wantEvents(
		"2 client FIN|ACK accept",
		"1 server ACK drop merge/merge held=2ms",
		"3 server FIN|ACK accept",
	)
}
