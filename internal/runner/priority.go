package runner

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultNice is the nice value `run` and `serve` give their threads (--nice). finproxy sits
// in the packet path of the applications it observes, on the same CPUs: at the same
// priority, a client that closes connections as fast as it can gets as much CPU as the
// queue's reader and writer and outruns them, and the kernel drops what the full queue
// cannot take (measured in the benchmark's connection churn: 22,196 of 66,291 queued
// segments dropped at nice 0, none at -10; docs/kernel-facts.md). Idle, finproxy uses
// no CPU, so the priority costs the applications nothing it does not give back.
const DefaultNice = -10

// SetNice gives every thread of this process the nice value n (Linux keeps one per
// thread). Threads the Go runtime starts later inherit it from the thread that starts
// them; a thread started while the list is walked is caught by a second walk.
func SetNice(n int) error {
	if n < -20 || n > 19 {
		return fmt.Errorf("nice %d: want -20 to 19", n)
	}
	var errs []error
	seen := map[int]bool{}
	for range 3 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("set nice %d: list this process's threads: %w", n, err)
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || seen[tid] {
				continue
			}
			seen[tid], fresh = true, fresh+1
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			}
		}
		if fresh == 0 {
			break
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("set nice %d (raising priority needs CAP_SYS_NICE): %w", n, errors.Join(errs...))
	}
	return nil
}
