package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// A run whose actions panicked exits 1, whatever else it did; an error of its own stays.
func TestPanicExit(t *testing.T) {
	clean := &runner.Result{Counters: []rules.Counters{{Rule: "drop-fin", Matched: 4, Dropped: 4}}}
	if err := panicExit(clean, nil); err != nil {
		t.Errorf("clean run: %v", err)
	}
	panicked := &runner.Result{Counters: []rules.Counters{{Rule: "drop-fin", Matched: 4, Dropped: 4}, {Rule: "delay", Matched: 2, Panicked: 2}}}
	err := panicExit(panicked, nil)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "actions panicked 2 times") {
		t.Errorf("run with panics: %v", err)
	}
	other := errors.New("remove iptables hooks: boom")
	if err := panicExit(panicked, other); err != other {
		t.Errorf("run with panics and an error: %v", err)
	}
}

// The summary warns about every way segments were lost or verdicts went wrong, and says
// nothing when none happened.
func TestPrintSummary(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  runner.Result
		want []string // in the WARNING line; none: no WARNING line
	}{
		{name: "clean", res: runner.Result{Queue: nfq.Stats{Received: 7, Verdicts: 7}, Records: 7}},
		{name: "full disk", res: runner.Result{Queue: nfq.Stats{Received: 400, Verdicts: 400}, Records: 268, RecordsLost: 132, PcapPackets: 10, PcapLost: 390},
			want: []string{"268 logged", "the event log lost 132 of 400 lines", "the capture lost 390 of 400 packets"}},
		{name: "everything", res: runner.Result{
			Queue:  nfq.Stats{Received: 9, Verdicts: 7, ENOBUFS: 1, ENOENT: 2, VerdictErrors: 3},
			Kernel: &nfq.KernelQueueStats{Dropped: 4, UserDropped: 5},
		}, want: []string{"1 ENOBUFS", "dropped 4 (full) and 5 (user)", "2 verdicts for segments the kernel no longer held", "3 verdicts could not be written"}},
		{name: "panics", res: runner.Result{
			Queue:    nfq.Stats{Received: 9, Verdicts: 9},
			Counters: []rules.Counters{{Rule: "drop-fin", Matched: 1, Dropped: 1}, {Rule: "delay-data", Matched: 3, Panicked: 3}},
		}, want: []string{"rule delay-data: its action panicked 3 times (those segments were accepted as they came: the fault did not happen"}},
		{name: "unclassified", res: runner.Result{
			Queue:        nfq.Stats{Received: 9, Verdicts: 9},
			Unclassified: runner.Unclassified{Fragments: 1, Malformed: 2, NotTCP: 3, Verdict: rules.UnclassifiedDrop},
		}, want: []string{"6 queued packets the rules could not see (1 fragments, 2 malformed, 3 not TCP) were dropped (target.unclassified)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.res.Counters == nil {
				tc.res.Counters = []rules.Counters{{Rule: "drop-fin", Matched: 1, Dropped: 1}}
			}
			var b strings.Builder
			printSummary(&b, &tc.res)
			out := b.String()
			if !strings.Contains(out, "drop-fin") || !strings.Contains(out, "segments: ") {
				t.Errorf("no counters or segment line:\n%s", out)
			}
			if got := strings.Contains(out, "WARNING:"); got != (len(tc.want) > 0) {
				t.Errorf("WARNING line %v, want %v:\n%s", got, len(tc.want) > 0, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q:\n%s", w, out)
				}
			}
		})
	}
}
