package observe

import (
	"testing"
	"time"
)

func TestNextPollWait(t *testing.T) {
	const base = 25 * time.Millisecond
	for _, tc := range []struct{ cost, want time.Duration }{
		{0, base}, // free: the configured period
		{time.Millisecond, base - time.Millisecond},             // cheap: the period from start to start stays 25 ms
		{2500 * time.Microsecond, base - 2500*time.Microsecond}, // a tenth of the period: still 25 ms
		{10 * time.Millisecond, 90 * time.Millisecond},          // dearer: nine times its cost
		{time.Second, maxPollInterval},                          // capped
	} {
		if got := nextPollWait(base, tc.cost); got != tc.want {
			t.Errorf("cost %v: wait %v, want %v", tc.cost, got, tc.want)
		}
	}
}
