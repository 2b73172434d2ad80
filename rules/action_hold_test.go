package rules

import (
	"testing"
	"time"
)

func TestHoldValidate(t *testing.T) {
	paramErr(t, (&HoldAction{}).Validate(), "until")
	paramErr(t, (&HoldAction{Until: EventPeerFIN, OnTimeout: 9}).Validate(), "on_timeout")
	// The timeout decides what a run shows when the event does not come: no default.
	paramErr(t, (&HoldAction{Until: EventPeerFIN}).Validate(), "timeout")
	if err := (&HoldAction{Until: EventBothFINs, Timeout: Duration(time.Second), OnTimeout: Drop}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestEventText(t *testing.T) {
	for _, ev := range []Event{EventPeerFIN, EventOwnFIN, EventClientFIN, EventServerFIN, EventBothFINs} {
		b, _ := ev.MarshalText()
		var got Event
		if err := got.UnmarshalText(b); err != nil || got != ev {
			t.Errorf("%s: %v %v", b, got, err)
		}
	}
	var e Event
	if err := e.UnmarshalText([]byte("peer-syn")); err == nil {
		t.Error("no error for peer-syn")
	}
}

// A hold whose event has already happened gives the verdict at once.
func TestHoldAlreadyReleased(t *testing.T) {
	h := newHarness(t, cfgOf(rule("hold-ack", Match{Side: Client, PureACK: true}, "hold",
		&HoldAction{Until: EventPeerFIN, Timeout: Duration(time.Second)})), Options{})
	h.handle(seg(testServer, testClient, fFIN|fACK, 1, 1, 0))
	h.handle(seg(testClient, testServer, fACK, 1, 2, 0))
	h.wantEvents("1 server FIN|ACK accept", "2 client ACK accept hold-ack/hold")
	h.wantCounters(Counters{Rule: "hold-ack", Matched: 1, Held: 1})
	if h.clk.Pending() != 0 {
		t.Error("a timer was set")
	}
}

// Several segments held on one connection are released in the order they were held, all
// before the segment that released them.
func TestHoldReleaseOrder(t *testing.T) {
	h := newHarness(t, cfgOf(rule("hold-data", Match{Side: Client, Payload: 1}, "hold",
		&HoldAction{Until: EventPeerFIN})), Options{})
	for i := range 3 {
		h.handle(seg(testClient, testServer, fPSH|fACK, uint32(1+10*i), 1, 10))
		h.clk.Advance(time.Millisecond)
	}
	h.handle(seg(testServer, testClient, fFIN|fACK, 1, 31, 0))
	h.wantEvents(
		"1 client PSH|ACK accept hold-data/hold held=3ms",
		"2 client PSH|ACK accept hold-data/hold held=2ms",
		"3 client PSH|ACK accept hold-data/hold held=1ms",
		"4 server FIN|ACK accept",
	)
}
