package runner

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// run and serve give the runtime a soft memory limit that follows the live heap: the
// floor for a small heap, never below twice the live heap (the collector works no more
// than GOGC=100 has it), and the limit found before once they end.
func TestGovernMemory(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	before := debug.SetMemoryLimit(-1)
	stop := GovernMemory(10 * time.Millisecond)
	if got := debug.SetMemoryLimit(-1); got < MemoryFloor || got > 2*MemoryFloor {
		t.Errorf("limit %d MiB with a small heap, want the floor (%d MiB) or near it", got>>20, MemoryFloor>>20)
	}
	live := make([]byte, 96<<20) // a live heap of 96 MiB: twice it is above the floor
	for i := range live {
		live[i] = byte(i)
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) < 2*int64(len(live)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := debug.SetMemoryLimit(-1); got < 2*int64(len(live)) {
		t.Errorf("limit %d MiB with %d MiB live, want at least twice the live heap", got>>20, len(live)>>20)
	}
	runtime.KeepAlive(live)
	// A second one (serve and run in one process) leaves it alone.
	GovernMemory(10 * time.Millisecond)()
	stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("limit %d after stop, want %d as before", got, before)
	}
}

// The user's GOMEMLIMIT (or GOGC=off) stands.
func TestGovernMemoryUserLimit(t *testing.T) {
	for _, env := range [][2]string{{"GOMEMLIMIT", "1GiB"}, {"GOGC", "off"}} {
		t.Setenv("GOMEMLIMIT", "")
		t.Setenv("GOGC", "")
		t.Setenv(env[0], env[1])
		before := debug.SetMemoryLimit(-1)
		stop := GovernMemory(time.Millisecond)
		if got := debug.SetMemoryLimit(-1); got != before {
			t.Errorf("%s=%s: limit %d, want %d as before", env[0], env[1], got, before)
		}
		stop()
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, MemoryFloor},
		{20 << 20, MemoryFloor},
		{26 << 20, 56 << 20},
		{40 << 20, 84 << 20},
		{1 << 30, 2<<30 + 4<<20},
		{math.MaxUint64, math.MaxInt64/4*2 + 4<<20},
	} {
		if got := memoryLimit(c.live); got != c.want {
			t.Errorf("memoryLimit(%d MiB) = %d MiB, want %d MiB", c.live>>20, got>>20, c.want>>20)
		}
	}
}
