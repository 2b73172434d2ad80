package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

// stallHarness opens a connection under rules and returns the harness and the
// sequence numbers after the handshake: the client's and the server's.
func stallHarness(t *testing.T, rules ...*Rule) *mharness {
	m := newMHarness(t, cfgOf(rules...), Options{})
	m.handle(seg(testClient, testServer, segment.SYN, 1000, 0, 0))
	m.handle(seg(testServer, testClient, segment.SYN|segment.ACK, 5000, 1001, 0))
	m.handle(seg(testClient, testServer, segment.ACK, 1001, 5001, 0))
	return m
}

// rsts renders the injected segments ("server > client RST|ACK seq=N").
func (m *mharness) rsts() []string {
	var out []string
	for _, s := range m.injectedSegs() {
		i := s.Info()
		from := "client"
		if i.Src == testServer {
			from = "server"
		}
		out = append(out, fmt.Sprintf("%s %s seq=%d", from, i.Flags, i.Seq))
	}
	return out
}

func TestStallReset(t *testing.T) {
	paramErr(t, (&StallAction{Reset: -1}).Validate(), "reset")
	m := stallHarness(t, rule("to", Match{Side: Server}, "stall", &StallAction{Reset: Duration(time.Second)}))
	// The timer starts at the server's SYN|ACK: at +0.
	m.clk.Advance(300 * time.Millisecond)
	m.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1001, 5001, 10)) // the request passes
	m.clk.Advance(100 * time.Millisecond)
	id := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1011, 100)) // new data at +0.4 s
	if v := m.verdicts[id]; v != Drop {
		t.Errorf("server data: %s, want drop", v)
	}
	m.clk.Advance(900 * time.Millisecond)
	if got := m.rsts(); len(got) != 0 {
		t.Fatalf("RSTs 0.9 s after the last new data: %v", got)
	}
	// A retransmission does not start the timer again.
	m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1011, 100))
	m.clk.Advance(99 * time.Millisecond)
	if got := m.rsts(); len(got) != 0 {
		t.Fatalf("RSTs before the timeout: %v", got)
	}
	m.clk.Advance(time.Millisecond)
	// Toward the client at what it acknowledged (5001), then at the server's next (5101,
	// the dropped data); toward the server at the client's next (1011) alone.
	want := []string{"server RST|ACK seq=5001", "server RST|ACK seq=5101", "client RST|ACK seq=1011"}
	if got := m.rsts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RSTs at 1 s after the last new data: %v, want %v", got, want)
	}
	if m.clk.Pending() != 0 {
		t.Errorf("%d timers left", m.clk.Pending())
	}
}

// Without new data the timer runs from the side's first segment; reset 0 never resets.
func TestStallTimerFromFirstSegment(t *testing.T) {
	m := stallHarness(t, rule("to", Match{Side: Server}, "stall", &StallAction{Reset: Duration(500 * time.Millisecond)}))
	m.clk.Advance(499 * time.Millisecond)
	if len(m.rsts()) != 0 {
		t.Fatal("RSTs before the timeout")
	}
	m.clk.Advance(time.Millisecond)
	if got := m.rsts(); len(got) != 2 {
		t.Errorf("RSTs %v, want one each way", got)
	}
	m = stallHarness(t, rule("to", Match{Side: Server}, "stall", &StallAction{}))
	m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1001, 100))
	m.clk.Advance(time.Hour)
	if got := m.rsts(); len(got) != 0 || m.verdicts[4] != Drop {
		t.Errorf("reset 0: RSTs %v, data %s; want none, dropped", got, m.verdicts[4])
	}
}

// inject-rst with a delay: the RSTs are made when sent, from the sides' state then.
func TestInjectRSTDelay(t *testing.T) {
	paramErr(t, (&InjectRSTAction{Toward: "both", Delay: -1}).Validate(), "delay")
	m := stallHarness(t,
		&Rule{Name: "rst", Match: Match{Side: Server, Payload: 1, Limit: 1}, ActionName: "inject-rst",
			Action: &InjectRSTAction{Toward: "both", Segment: Drop, Delay: Duration(time.Second)}},
		rule("rst:drop", Match{Side: Server, Payload: 1}, "drop", &DropAction{}))
	m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1001, 100))
	m.clk.Advance(500 * time.Millisecond)
	m.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1001, 5001, 20)) // passes
	m.handle(seg(testServer, testClient, segment.ACK, 5001, 1021, 0))              // the server's ACK of it
	m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1021, 100))
	m.clk.Advance(499 * time.Millisecond)
	if len(m.rsts()) != 0 {
		t.Fatal("RSTs before the delay")
	}
	m.clk.Advance(time.Millisecond)
	want := []string{"server RST|ACK seq=5001", "server RST|ACK seq=5101", "client RST|ACK seq=1021"}
	if got := m.rsts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RSTs %v, want %v", got, want)
	}
	m.wantCounters(Counters{Rule: "rst", Matched: 1, Dropped: 1, Injected: 3}, Counters{Rule: "rst:drop", Matched: 1, Dropped: 1})
}
