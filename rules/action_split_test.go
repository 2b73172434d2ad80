package rules

import (
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

func TestSplitValidate(t *testing.T) {
	paramErr(t, (&SplitAction{FIN: "later"}).Validate(), "fin")
	paramErr(t, (&SplitAction{FIN: SplitRetransmit, Delay: Duration(time.Second)}).Validate(), "delay")
	for _, a := range []*SplitAction{{}, {FIN: SplitInject, Delay: Duration(time.Second)}, {FIN: SplitRetransmit}} {
		if err := a.Validate(); err != nil {
			t.Error(err)
		}
	}
	if (&SplitAction{FIN: SplitRetransmit}).Injects() || !(&SplitAction{}).Injects() {
		t.Error("Injects: want true for inject only")
	}
}

func splitCfg(a *SplitAction) *Config {
	return cfgOf(rule("split", Match{Side: Server, HasFlags: fFIN, Phases: PhaseAckOfClientFIN}, "split", a))
}

// testdata/seq/split.txt: the FIN|ACK leaves as a pure ACK; the FIN follows 100 ms later,
// injected (the same seq: the ACK took none).
func TestSplitInject(t *testing.T) {
	m := newMHarness(t, splitCfg(&SplitAction{}), Options{})
	m.play(loadSeq(t, "split.txt"))
	m.wantEvents(
		"1 client SYN accept",
		"2 server SYN|ACK accept",
		"3 client ACK accept",
		"4 client FIN|ACK accept",
		"5 server ACK accept split/split modified",
		"0 server FIN|ACK accept split/split held=100ms injected",
		"6 client ACK accept",
	)
	m.wantCounters(Counters{Rule: "split", Matched: 1, Passed: 1, Modified: 1, Injected: 1})
	ack, inj := m.outSeg(5), m.injectedSegs()
	if ack == nil || ack.Flags() != segment.ACK || ack.Seq() != 5001 || ack.Ack() != 1002 {
		t.Errorf("the acknowledgment left as %v", ack)
	}
	if len(inj) != 1 || inj[0].Flags() != segment.FIN|segment.ACK || inj[0].Seq() != 5001 || inj[0].Ack() != 1002 {
		t.Errorf("injected %v", inj)
	}
}

// fin = retransmit: nothing injected; the sender's retransmitted FIN (after its own FIN)
// passes. A FIN|ACK that does not acknowledge the peer's FIN passes unchanged.
func TestSplitRetransmit(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("split", Match{Side: Server, HasFlags: fFIN}, "split", &SplitAction{FIN: SplitRetransmit})), Options{})
	m.handle(seg(testClient, testServer, fFIN|fACK, 1001, 5001, 0))
	m.handle(seg(testServer, testClient, fFIN|fPSH|fACK, 5001, 1002, 4)) // data too: stays with the ACK
	m.clk.Advance(300 * time.Millisecond)
	m.handle(seg(testServer, testClient, fFIN|fPSH|fACK, 5001, 1002, 4))
	m.wantEvents(
		"1 client FIN|ACK accept",
		"2 server PSH|ACK accept split/split modified",
		"3 server FIN|PSH|ACK accept split/split",
	)
	if s := m.outSeg(2); s == nil || len(s.Payload()) != 4 {
		t.Errorf("the acknowledgment lost its data: %v", s)
	}
	if len(m.injectedSegs()) != 0 {
		t.Error("retransmit injected")
	}
	o := newMHarness(t, splitCfg(&SplitAction{}), Options{})
	o.handle(seg(testServer, testClient, fFIN|fACK, 5001, 1001, 0)) // the server closes first
	o.wantEvents("1 server FIN|ACK accept")
}
