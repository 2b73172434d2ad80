package rules

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// The rules replaced in the middle of a connection act on its next segments, with the
// phases the tracker learned under the old rules: here the final ACK is only recognised
// (ack-of-server-fin) because the FINs before it were tracked.
func TestReplaceKeepsConnections(t *testing.T) {
	lines := loadSeq(t, "lost-final-ack.txt")
	h := newHarness(t, cfgOf(), Options{})
	h.play(lines[:6])
	old := h.eng.Replace(cfgOf(rule("drop-final-ack",
		Match{Side: Client, PureACK: true, Phases: PhaseAckOfServerFIN, Nth: 1}, "drop", &DropAction{})))
	if len(old) != 0 {
		t.Errorf("counters of the empty rule set: %+v", old)
	}
	for _, l := range lines[6:] {
		h.clk.Advance(l.delta)
		h.handle(l.seg)
	}
	want := acceptedPrefix(lines, len(lines))
	want[6] = "7 client ACK drop drop-final-ack/drop"
	h.wantEvents(want...)
	h.wantCounters(Counters{Rule: "drop-final-ack", Matched: 1, Dropped: 1})
	h.allVerdicts()
}

// A replacement releases what the old rules held (accepted, like Close), returns their
// final counters, and the new rules start from zero.
func TestReplaceReleasesHeld(t *testing.T) {
	lines := loadSeq(t, "fin-no-peer.txt")
	h := newHarness(t, holdFINRules(time.Minute, Drop, 0), Options{})
	h.play(lines[:4])
	h.clk.Advance(10 * time.Millisecond)
	old := h.eng.Replace(nil)
	if got, want := fmt.Sprint(old), fmt.Sprint([]Counters{
		{Rule: "hold-client-fin", Matched: 1, Held: 1}, {Rule: "hold-server-fin"}}); got != want {
		t.Errorf("old counters %s, want %s", got, want)
	}
	h.allVerdicts()
	if n := h.eng.Pending(); n != 0 {
		t.Errorf("%d segments pending after Replace", n)
	}
	if n := h.clk.Pending(); n != 0 {
		t.Errorf("%d timers left after Replace", n)
	}
	h.wantEvents(append(acceptedPrefix(lines, 3), "4 client FIN|ACK accept hold-client-fin/hold held=10ms")...)
	h.wantCounters()
	// The held FIN's retransmission passes: no rule any more.
	h.handle(lines[3].seg)
	h.allVerdicts()
	h.wantCounters()
}

// nth and limit count again from the replacement, for rule sets of any size (more rules
// than the tracker's inline per-connection state).
func TestReplaceResetsRuleState(t *testing.T) {
	many := func(n int) *Config {
		var rs []*Rule
		for i := range n - 1 {
			rs = append(rs, rule(fmt.Sprintf("never-%d", i), Match{Side: Client, HasFlags: fRST}, "drop", &DropAction{}))
		}
		return cfgOf(append(rs, rule("first-data", Match{Side: Client, Payload: 1, Nth: 1}, "drop", &DropAction{}))...)
	}
	h := newHarness(t, many(1), Options{})
	h.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	h.handle(seg(testServer, testClient, fSYN|fACK, 5000, 1001, 0))
	h.handle(seg(testClient, testServer, fACK, 1001, 5001, 0))
	h.handle(seg(testClient, testServer, fPSH|fACK, 1001, 5001, 10)) // dropped: 1st
	for _, n := range []int{6, 1, 3} {
		h.eng.Replace(many(n))
		id := h.handle(seg(testClient, testServer, fPSH|fACK, 1011, 5001, 10))
		if v := h.verdicts[id]; v != Drop {
			t.Errorf("after Replace with %d rules: first data segment %s, want drop", n, v)
		}
		id = h.handle(seg(testClient, testServer, fPSH|fACK, 1021, 5001, 10))
		if v := h.verdicts[id]; v != Accept {
			t.Errorf("after Replace with %d rules: second data segment %s, want accept", n, v)
		}
	}
	h.allVerdicts()
}

// Replace is safe while segments are being handled: every segment gets one verdict, from
// one rule set whole (a rule set drops every client data segment, or none).
func TestReplaceConcurrent(t *testing.T) {
	dropAll := cfgOf(rule("a", Match{Side: Client, Payload: 1}, "drop", &DropAction{}),
		rule("b", Match{Side: Client, Payload: 1}, "drop", &DropAction{}))
	passAll := cfgOf(rule("c", Match{Side: Client, Payload: 1}, "pass", &PassAction{}))
	h := newHarness(t, passAll, Options{})
	h.eng.observe = nil // the harness map is not for concurrent use
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			if i%2 == 0 {
				h.eng.Replace(dropAll)
			} else {
				h.eng.Replace(passAll)
			}
		}
	}()
	const n = 5000
	for i := range n {
		h.nextID++
		h.eng.Handle(Packet{ID: h.nextID, Time: h.clk.Now(), Seg: seg(testClient, testServer, fPSH|fACK, uint32(1001+10*i), 5001, 10)})
	}
	wg.Wait()
	h.allVerdicts()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		switch {
		case r.Rule == "a" && r.Verdict == Drop, r.Rule == "c" && r.Verdict == Accept:
		default:
			t.Fatalf("record %+v: not what a whole rule set decides", r)
		}
	}
}
