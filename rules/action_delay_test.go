package rules

import (
	"strings"
	"testing"
	"time"
)

// paramErr checks that err is a parameter error naming param.
func paramErr(t *testing.T, err error, param string) {
	t.Helper()
	if err == nil {
		t.Errorf("no error, want one about %s", param)
		return
	}
	pe, ok := err.(interface{ Param() string })
	if !ok || pe.Param() != param || !strings.HasPrefix(err.Error(), param+": ") {
		t.Errorf("error %q does not name %s", err, param)
	}
}

func TestDelayValidate(t *testing.T) {
	paramErr(t, (&DelayAction{}).Validate(), "delay")
	paramErr(t, (&DelayAction{Delay: Duration(time.Second), Jitter: -1}).Validate(), "jitter")
	if err := (&DelayAction{Delay: Duration(time.Millisecond), Jitter: Duration(time.Second)}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestDelayAction(t *testing.T) {
	h := newHarness(t, cfgOf(rule("delay-fin", Match{HasFlags: fFIN}, "delay", &DelayAction{Delay: Duration(200 * time.Millisecond)})), Options{})
	h.handle(seg(testClient, testServer, fFIN|fACK, 1, 1, 0))
	h.clk.Advance(100 * time.Millisecond)
	h.handle(seg(testServer, testClient, fFIN|fACK, 1, 2, 0))
	h.clk.Advance(time.Second)
	h.wantEvents(
		"1 client FIN|ACK accept delay-fin/delay held=200ms",
		"2 server FIN|ACK accept delay-fin/delay held=200ms",
	)
	h.wantCounters(Counters{Rule: "delay-fin", Matched: 2, Delayed: 2})
}
