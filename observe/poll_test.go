package observe

import (
	"net/netip"
	"sync"
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

func TestKickBudget(t *testing.T) {
	var b kickBudget
	t0 := time.Now()
	// A full budget at first: polls costing 10 ms go at once until 100 ms are spent.
	for i := range 10 {
		if w := b.take(t0, 10*time.Millisecond); w != 0 {
			t.Fatalf("poll %d waits %v with budget left", i, w)
		}
	}
	// Then each waits until 1/20 of the time passing has paid for it.
	if w := b.take(t0, 10*time.Millisecond); w != 200*time.Millisecond {
		t.Errorf("wait %v, want 200ms", w)
	}
	// A second later the debt (10 ms) is paid and 40 ms saved up.
	if w := b.take(t0.Add(time.Second), 40*time.Millisecond); w != 0 {
		t.Errorf("after a second: wait %v, want 0", w)
	}
	// Never more than kickBurst saved up.
	b.refill(t0.Add(time.Hour))
	if b.credit != kickBurst {
		t.Errorf("credit %v after an hour, want %v", b.credit, kickBurst)
	}
}

// Annotate does not take the observer's lock: notes wait until the next holder of it (a
// trace line, a poll, Snapshot, Leaks) applies them, or until maxPendingNotes of them do.
func TestAnnotateDeferred(t *testing.T) {
	o := &Observer{clock: NewClock(), tl: newTimeline(Filter{}, true, 0), changed: make(chan struct{})}
	cl, sv := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")
	o.Annotate(Note{At: time.Now(), Src: cl, Dst: sv, Text: "client SYN"})
	if len(o.tl.conns) != 0 {
		t.Fatal("a note was applied on Annotate's path")
	}
	r := o.Snapshot()
	if len(r.Connections) != 1 || len(r.Connections[0].Notes) != 1 || r.Connections[0].Notes[0].Text != "client SYN" {
		t.Fatalf("snapshot: %+v", r.Connections)
	}
	for range maxPendingNotes {
		o.Annotate(Note{At: time.Now(), Src: sv, Dst: cl, Text: "server ACK"})
	}
	o.nmu.Lock()
	waiting := len(o.pending)
	o.nmu.Unlock()
	if waiting != 0 {
		t.Errorf("%d notes still waiting after %d: the bound did not apply them", waiting, maxPendingNotes)
	}

	// Concurrent annotators and readers (go test -race).
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				o.Annotate(Note{At: time.Now(), Src: cl, Dst: sv, Text: "client ACK"})
			}
		}()
	}
	for range 20 {
		o.Snapshot()
	}
	wg.Wait()
	notes := 0
	for _, c := range o.Snapshot().Connections {
		notes += len(c.Notes) + c.NotesDropped
	}
	if want := 1 + maxPendingNotes + 4000; notes != want {
		t.Errorf("%d notes kept or counted as dropped, want %d", notes, want)
	}
}
