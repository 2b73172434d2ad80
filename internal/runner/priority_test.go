package runner

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// niceOf reads a thread's nice value (the system call returns 20 - nice).
func niceOf(t *testing.T, tid int) int {
	t.Helper()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		t.Fatal(err)
	}
	return 20 - p
}

// Every thread of the process gets the value, those that exist and those started after.
// Lowering the priority needs no privilege, so this runs everywhere: the test process
// ends up at nice 5, which harms nothing.
func TestSetNiceEveryThread(t *testing.T) {
	if err := SetNice(5); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if n := niceOf(t, tid); n != 5 {
			t.Errorf("thread %d: nice %d, want 5", tid, n)
		}
	}
	// A new OS thread, started now: a goroutine locked to its thread while others block
	// in system calls makes the runtime start more.
	var wg sync.WaitGroup
	tids := make(chan int, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
		}()
	}
	wg.Wait()
	close(tids)
	for tid := range tids {
		if n := niceOf(t, tid); n != 5 {
			t.Errorf("thread %d started after SetNice: nice %d, want 5", tid, n)
		}
	}
}

func TestSetNiceRange(t *testing.T) {
	for _, n := range []int{-21, 20} {
		if err := SetNice(n); err == nil {
			t.Errorf("SetNice(%d) accepted", n)
		}
	}
}
