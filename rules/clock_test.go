package rules

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestFakeClock(t *testing.T) {
	c := NewFakeClock(t0)
	var got []string
	at := func(name string) func() {
		return func() { got = append(got, fmt.Sprintf("%s@%v", name, c.Now().Sub(t0))) }
	}
	c.AfterFunc(30*time.Millisecond, at("c"))
	c.AfterFunc(10*time.Millisecond, at("a"))
	c.AfterFunc(10*time.Millisecond, at("a2")) // same deadline: in the order set
	stopped := c.AfterFunc(20*time.Millisecond, at("never"))
	c.AfterFunc(20*time.Millisecond, func() {
		at("b")()
		c.AfterFunc(5*time.Millisecond, at("nested")) // falls due within the same Advance
	})
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop: want true then false")
	}
	if c.Pending() != 4 {
		t.Errorf("Pending = %d", c.Pending())
	}
	c.Advance(25 * time.Millisecond)
	if c.Now() != t0.Add(25*time.Millisecond) {
		t.Errorf("Now = %v", c.Now().Sub(t0))
	}
	c.Advance(time.Second)
	want := "[a@10ms a2@10ms b@20ms nested@25ms c@30ms]"
	if fmt.Sprint(got) != want {
		t.Errorf("fired %v, want %s", got, want)
	}
	if c.Pending() != 0 {
		t.Errorf("Pending = %d", c.Pending())
	}
	fired := c.AfterFunc(0, at("zero"))
	c.Advance(0)
	if fired.Stop() {
		t.Error("Stop after firing reported true")
	}
}

func TestSystemClock(t *testing.T) {
	c := SystemClock()
	if d := time.Since(c.Now()); d < 0 || d > time.Second {
		t.Errorf("Now is %v off", d)
	}
	var n atomic.Int32
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { n.Add(1); close(done) })
	stopped := c.AfterFunc(time.Hour, func() { n.Add(10) })
	if !stopped.Stop() {
		t.Error("Stop reported false")
	}
	<-done
	if n.Load() != 1 {
		t.Errorf("n = %d", n.Load())
	}
}

// A SystemClock timer never fires before its deadline, short or long (the last stretch
// is slept apart from the runtime's timers), and Stop prevents it also in that stretch.
func TestSystemClockDeadlineAndStop(t *testing.T) {
	c := SystemClock()
	for _, d := range []time.Duration{0, 300 * time.Microsecond, timerLead, timerLead + 3*time.Millisecond} {
		start := time.Now()
		fired := make(chan time.Duration, 1)
		c.AfterFunc(d, func() { fired <- time.Since(start) })
		if got := <-fired; got < d {
			t.Errorf("timer of %v fired after %v", d, got)
		}
	}
	var ran atomic.Bool
	tm := c.AfterFunc(timerLead+time.Millisecond, func() { ran.Store(true) })
	time.Sleep(time.Millisecond + timerLead/2) // usually in the final sleep by now
	if !tm.Stop() {
		t.Error("Stop before the deadline reported false")
	}
	if tm.Stop() {
		t.Error("a second Stop reported true")
	}
	time.Sleep(2 * timerLead)
	if ran.Load() {
		t.Error("the stopped timer fired")
	}
}
