package runner

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"time"
)

// MemoryFloor is the least soft memory limit run and serve give the Go runtime (see
// GovernMemory): with it, finproxy's RSS stayed at 56 to 62 MiB with 10k connections
// observed and the handshake queued, where the GC's own pacing let it settle at 66 to
// 74 MiB.
const MemoryFloor = 44 << 20

// memoryLimit is the soft memory limit for a live heap of live bytes: twice the live heap
// and 4 MiB for stacks and the runtime's own, never below MemoryFloor. The collector's
// own goal with GOGC=100 is twice the live heap at the last collection, so the limit
// never makes it collect more often than that in a steady state; what it does is hand
// back at once the memory above it, once the heap grew past it (a burst of garbage, the
// buffers of a poll of tens of thousands of sockets), and keep the goal from following a
// collection that counted such a burst as live. One and a half times the live heap kept
// RSS lower (53 to 55 MiB with 10k connections observed, against 56 to 62 at twice) but
// made the collector run up to twice as often during a churn with observation: the
// queue fell behind and the kernel dropped 22,108 of 128,712 segments (none at twice, in
// the same lab).
func memoryLimit(live uint64) int64 {
	return max(MemoryFloor, int64(min(live, math.MaxInt64/4))*2+4<<20)
}

// governed is held by the GovernMemory that sets the limit (one at a time in a process).
var governed sync.Mutex

// GovernMemory sets the Go runtime's soft memory limit (debug.SetMemoryLimit) to
// memoryLimit of the live heap, read again every period, until the returned function is
// called, which restores the limit it found. The Go runtime by itself keeps what the
// heap once took up to its goal, twice the live heap at the last collection, and that
// goal follows whatever was live just then: with 10k connections observed, RSS was
// anywhere from 53 to 70 MiB from one run to the next. It does nothing when GOMEMLIMIT
// or GOGC=off is in the environment (the user's choice stands), or while another
// GovernMemory runs.
func GovernMemory(period time.Duration) (stop func()) {
	if os.Getenv("GOMEMLIMIT") != "" || strings.EqualFold(os.Getenv("GOGC"), "off") || !governed.TryLock() {
		return func() {}
	}
	prev := debug.SetMemoryLimit(-1)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(memoryLimit(sample[0].Value.Uint64()))
		}
	}
	set()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				set()
			}
		}
	}()
	return func() {
		cancel()
		<-done
		debug.SetMemoryLimit(prev)
		governed.Unlock()
	}
}
