package observe

import (
	"time"

	"golang.org/x/sys/unix"
)

// MonoNow reads CLOCK_MONOTONIC, the clock of the trace instance (trace_clock "mono") and
// of Mono fields.
func MonoNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC cannot fail on Linux; keep the signature simple.
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return time.Duration(ts.Nano())
}

// Clock maps the kernel's CLOCK_MONOTONIC (Mono values) to Go times and back.
//
// A Clock is one paired sample of time.Now() and CLOCK_MONOTONIC. Time(mono) is that
// time.Now() value plus (mono - sample): the result carries Go's monotonic reading, which
// on Linux is CLOCK_MONOTONIC itself, so comparing it with (or subtracting it from) any
// time.Now() taken in this process is exact and immune to wall-clock steps. Its wall part
// (what JSON prints) is as right as the wall clock was at the sample. Mono(t) is the
// inverse for a t from time.Now() (for example when a segment verdict was given): that is
// how external events are put on the kernel's clock.
type Clock struct {
	wall time.Time
	mono time.Duration
}

// NewClock samples both clocks. The error of the pairing is half the time between two
// clock_gettime calls (well under a microsecond).
func NewClock() Clock {
	m1 := MonoNow()
	now := time.Now()
	m2 := MonoNow()
	return Clock{wall: now, mono: m1 + (m2-m1)/2}
}

// Time converts a CLOCK_MONOTONIC value to a time.Time (with a monotonic reading).
func (c Clock) Time(mono time.Duration) time.Time { return c.wall.Add(mono - c.mono) }

// Mono converts a time.Time to CLOCK_MONOTONIC. With a t that has a monotonic reading
// (time.Now() in this process) it is exact; otherwise it goes through the wall clock.
func (c Clock) Mono(t time.Time) time.Duration { return c.mono + t.Sub(c.wall) }
