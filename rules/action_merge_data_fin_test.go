package rules

import (
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/segtest"
)

func TestMergeDataFINNeedsData(t *testing.T) {
	var a Action = &MergeDataFINAction{}
	if nd, ok := a.(NeedsData); !ok || !nd.NeedsData() {
		t.Error("merge-data-fin does not ask for data segments")
	}
}

func mergeDataFINCfg() *Config {
	return cfgOf(rule("fin-with-data", Match{Side: Server}, "merge-data-fin", &MergeDataFINAction{}))
}

// Scenario 7 (testdata/seq/fin-with-data.txt): the reply leaves with the FIN set, the FIN
// is dropped, merged into it; the stream is whole (the merged payload is the reply's).
func TestMergeDataFINSequence(t *testing.T) {
	m := newMHarness(t, mergeDataFINCfg(), Options{})
	m.play(loadSeq(t, "fin-with-data.txt"))
	m.wantEvents(
		"1 client SYN accept",
		"2 server SYN|ACK accept fin-with-data/merge-data-fin",
		"3 client ACK accept",
		"4 client PSH|ACK accept",
		"5 server ACK accept fin-with-data/merge-data-fin",
		"6 server FIN|PSH|ACK accept fin-with-data/merge-data-fin held=1ms modified",
		"7 server FIN|ACK drop fin-with-data/merge-data-fin",
		"8 client ACK accept",
		"9 client FIN|ACK accept",
		"10 server ACK accept fin-with-data/merge-data-fin",
	)
	m.wantCounters(Counters{Rule: "fin-with-data", Matched: 5, Passed: 4, Merged: 1, Modified: 1})
	m.allVerdicts()
	s := m.outSeg(6)
	if s == nil {
		t.Fatal("the reply was not rewritten")
	}
	if s.Seq() != 5001 || s.Ack() != 1011 || string(s.Payload()) != string(segtest.PayloadAt(5001, 17)) {
		t.Errorf("merged segment %v, payload %q", s, s.Payload())
	}
	// The FIN's timestamps (the newest the sender had).
	if val, _, ok := s.Timestamps(); !ok || val != 1000+5018 {
		t.Errorf("timestamps %d %v, want the FIN's", val, ok)
	}
	// The client's ACK of both: seq + len + 1.
	if r := m.record(7); r.Ack != s.Seq()+uint32(len(s.Payload()))+1 {
		t.Errorf("the client's ACK %d", r.Ack)
	}
}

// A held data segment goes unchanged when the next segment of its side is more data (or
// anything but the bare FIN right after it), when the FIN leaves a gap, and at the
// timeout; the other side's segments do not release it.
func TestMergeDataFINReleases(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("m", Match{}, "merge-data-fin", &MergeDataFINAction{Timeout: Duration(50 * time.Millisecond)})), Options{})
	m.handle(seg(testServer, testClient, fPSH|fACK, 5001, 1011, 10)) // 1 held
	m.handle(seg(testClient, testServer, fACK, 1011, 5011, 0))       // 2 the other side: passes, 1 stays
	m.clk.Advance(time.Millisecond)
	m.handle(seg(testServer, testClient, fPSH|fACK, 5011, 1011, 10)) // 3 releases 1, held
	m.clk.Advance(time.Millisecond)
	m.handle(seg(testServer, testClient, fFIN|fACK, 5022, 1011, 0))      // 4 a gap: releases 3, passes
	m.handle(seg(testServer, testClient, fPSH|fACK, 6000, 1011, 5))      // 5 held
	m.clk.Advance(time.Second)                                           // 5 times out
	m.handle(seg(testServer, testClient, fFIN|fPSH|fACK, 6005, 1011, 5)) // 6 a FIN with data: passes
	m.wantEvents(
		"2 client ACK accept m/merge-data-fin",
		"1 server PSH|ACK accept m/merge-data-fin held=1ms",
		"3 server PSH|ACK accept m/merge-data-fin held=1ms",
		"4 server FIN|ACK accept m/merge-data-fin",
		"5 server PSH|ACK accept m/merge-data-fin held=50ms",
		"6 server FIN|PSH|ACK accept m/merge-data-fin",
	)
	m.wantCounters(Counters{Rule: "m", Matched: 6, Passed: 6})
	m.allVerdicts()
}

// Without a sink that can rewrite, merge-data-fin holds nothing.
func TestMergeDataFINPlainSink(t *testing.T) {
	h := newHarness(t, mergeDataFINCfg(), Options{})
	h.play(loadSeq(t, "fin-with-data.txt"))
	h.wantCounters(Counters{Rule: "fin-with-data", Matched: 5, Passed: 5})
	if h.eng.Pending() != 0 {
		t.Error("a segment is held")
	}
}

// A retransmission of the held segment replaces it (the held copy dropped, merged into
// it), and waits for the FIN in its place; a retransmission with the FIN passes alone.
func TestMergeDataFINRetransmission(t *testing.T) {
	m := newMHarness(t, mergeDataFINCfg(), Options{})
	m.handle(seg(testServer, testClient, fPSH|fACK, 5001, 1011, 17)) // 1 held
	m.clk.Advance(60 * time.Millisecond)
	m.handle(seg(testServer, testClient, fPSH|fACK, 5001, 1011, 17)) // 2 its retransmission: 1 dropped, 2 held
	m.clk.Advance(10 * time.Millisecond)
	m.handle(seg(testServer, testClient, fFIN|fACK, 5018, 1011, 0))      // 3 merged into 2
	m.handle(seg(testServer, testClient, fPSH|fACK, 6000, 1011, 5))      // 4 held
	m.handle(seg(testServer, testClient, fFIN|fPSH|fACK, 6000, 1011, 5)) // 5 retransmitted with its FIN: 4 dropped, 5 passes
	m.wantEvents(
		"1 server PSH|ACK drop fin-with-data/merge-data-fin held=60ms",
		"2 server FIN|PSH|ACK accept fin-with-data/merge-data-fin held=10ms modified",
		"3 server FIN|ACK drop fin-with-data/merge-data-fin",
		"4 server PSH|ACK drop fin-with-data/merge-data-fin",
		"5 server FIN|PSH|ACK accept fin-with-data/merge-data-fin",
	)
	m.wantCounters(Counters{Rule: "fin-with-data", Matched: 5, Passed: 2, Merged: 3, Modified: 1})
	m.allVerdicts()
}
