package rules

import (
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/segtest"
)

func TestReplayValidate(t *testing.T) {
	paramErr(t, (&ReplayAction{After: "sunrise"}).Validate(), "after")
	paramErr(t, (&ReplayAction{Original: 5}).Validate(), "original")
	if err := (&ReplayAction{After: ReplayClose, Original: Drop}).Validate(); err != nil {
		t.Error(err)
	}
	var a Action = &ReplayAction{}
	if nd, ok := a.(NeedsData); !ok || !nd.NeedsData() {
		t.Error("replay does not ask for every segment")
	}
}

// testdata/seq/old-duplicate.txt: the client's request of incarnation 1 is dropped and
// kept; 20 ms after incarnation 2's handshake its copy is sent, with the sequence numbers
// of incarnation 1.
func TestReplayNextIncarnation(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("old-request", Match{Side: Client, Payload: 1, GlobalLimit: 1}, "replay",
		&ReplayAction{Original: Drop})), Options{})
	m.play(loadSeq(t, "old-duplicate.txt"))
	m.wantEvents(
		"1 client SYN accept",
		"2 server SYN|ACK accept",
		"3 client ACK accept",
		"4 client PSH|ACK drop old-request/replay",
		"5 client PSH|ACK accept",
		"6 server FIN|PSH|ACK accept",
		"7 client ACK accept",
		"8 client FIN|ACK accept",
		"9 server ACK accept",
		"10 client SYN accept",
		"11 server SYN|ACK accept",
		"12 client ACK accept",
		"13 client PSH|ACK accept",
		"0 client PSH|ACK accept old-request/replay held=526ms injected",
		"14 server ACK accept",
	)
	inj := m.injectedSegs()
	if len(inj) != 1 || inj[0].Seq() != 1001 || inj[0].Ack() != 5001 || string(inj[0].Payload()) != string(segtest.PayloadAt(1001, 10)) {
		t.Fatalf("injected %v", inj)
	}
	if r := m.record(13); r.Client != testClient || r.Side != Client {
		t.Errorf("record %+v", r)
	}
	m.wantCounters(Counters{Rule: "old-request", Matched: 1, Dropped: 1, Injected: 1})
}

// after = close: the copy goes once the connection is over; without a next incarnation
// the copy is given up at the timeout.
func TestReplayCloseAndTimeout(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("r", Match{Side: Server, Payload: 1}, "replay", &ReplayAction{After: ReplayClose, Delay: Duration(time.Millisecond)})), Options{})
	m.play(loadSeq(t, "old-duplicate.txt")[:9])
	m.clk.Advance(10 * time.Millisecond)
	m.wantEvents(
		"1 client SYN accept",
		"2 server SYN|ACK accept",
		"3 client ACK accept",
		"4 client PSH|ACK accept",
		"5 client PSH|ACK accept",
		"6 server FIN|PSH|ACK accept r/replay",
		"7 client ACK accept",
		"8 client FIN|ACK accept",
		"9 server ACK accept",
		"0 server FIN|PSH|ACK accept r/replay held=4ms injected",
	)

	g := newMHarness(t, cfgOf(rule("r", Match{Side: Server, Payload: 1}, "replay", &ReplayAction{Timeout: Duration(time.Second)})), Options{})
	g.play(loadSeq(t, "old-duplicate.txt")[:9])
	g.clk.Advance(2 * time.Second)
	if len(g.injectedSegs()) != 0 || len(g.eng.waiting) != 0 || len(g.eng.injections) != 0 {
		t.Error("a copy was sent, or is still waiting, after the timeout")
	}
}
