package nfq

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelQueueStats is one line of /proc/net/netfilter/nfnetlink_queue: the
// kernel's view of a bound queue. The file lists only bound queues of the
// reading thread's network namespace.
type KernelQueueStats struct {
	Queue     uint16 `json:"queue"`
	PortID    uint32 `json:"port_id"`    // netlink port id of the bound socket
	Waiting   uint32 `json:"waiting"`    // packets queued now, waiting for a verdict
	CopyMode  uint8  `json:"copy_mode"`  // 2 = whole packet
	CopyRange uint32 `json:"copy_range"` // bytes copied per packet
	// Dropped counts packets dropped because the queue was full (MaxLen). With
	// FailOpen they are accepted unqueued instead and this counter stays put
	// (measured, TestQueueFull).
	Dropped uint32 `json:"dropped"`
	// UserDropped counts packets the kernel could not hand to the socket (receive
	// buffer full, the ENOBUFS case); dropped, or accepted with FailOpen.
	UserDropped uint32 `json:"user_dropped"`
	IDSequence  uint32 `json:"id_sequence"` // last packet id given out
}

const kernelStatsPath = "/proc/thread-self/net/netfilter/nfnetlink_queue"

// ErrQueueNotBound is returned by KernelStats for a queue the kernel does not list.
var ErrQueueNotBound = errors.New("queue not bound in this network namespace")

// KernelStats reads the kernel's counters for queue num in the network namespace
// of the calling thread. For a Queue opened in another namespace use
// Queue.KernelStats.
func KernelStats(num uint16) (KernelQueueStats, error) { return kernelStatsIn(-1, num) }

func kernelStatsIn(nsfd int, num uint16) (KernelQueueStats, error) {
	data, err := readInNetNS(nsfd, kernelStatsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return KernelQueueStats{}, fmt.Errorf("nfq: kernel stats of queue %d: %w (nfnetlink_queue not loaded: no queue was ever bound)", num, ErrQueueNotBound)
		}
		return KernelQueueStats{}, fmt.Errorf("nfq: kernel stats of queue %d: %w", num, err)
	}
	all, perr := parseKernelStats(string(data))
	for _, s := range all {
		if s.Queue == num {
			return s, nil
		}
	}
	if perr != nil {
		return KernelQueueStats{}, fmt.Errorf("nfq: kernel stats of queue %d: %w", num, perr)
	}
	return KernelQueueStats{}, fmt.Errorf("nfq: kernel stats of queue %d: %w", num, ErrQueueNotBound)
}

// parseKernelStats parses the whole file. Malformed lines are skipped and
// reported in err (joined); the good ones are returned all the same.
//
// The kernel writes (net/netfilter/nfnetlink_queue.c, seq_show):
//
//	"%5u %6u %5u %1u %5u %5u %5u %8u %2d\n": queue_num, peer_portid,
//	queue_total, copy_mode, copy_range, queue_dropped, queue_user_dropped,
//	id_sequence, 1
func parseKernelStats(data string) ([]KernelQueueStats, error) {
	var out []KernelQueueStats
	var errs []error
	n := 0
	for line := range strings.Lines(data) {
		n++
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			errs = append(errs, fmt.Errorf("nfnetlink_queue line %d %q: %d fields, want 9", n, strings.TrimSpace(line), len(f)))
			continue
		}
		var v [8]uint64
		bits := [8]int{16, 32, 32, 8, 32, 32, 32, 32}
		var bad error
		for i := range v {
			v[i], bad = strconv.ParseUint(f[i], 10, bits[i])
			if bad != nil {
				break
			}
		}
		if bad != nil {
			errs = append(errs, fmt.Errorf("nfnetlink_queue line %d %q: %w", n, strings.TrimSpace(line), bad))
			continue
		}
		out = append(out, KernelQueueStats{
			Queue: uint16(v[0]), PortID: uint32(v[1]), Waiting: uint32(v[2]), CopyMode: uint8(v[3]),
			CopyRange: uint32(v[4]), Dropped: uint32(v[5]), UserDropped: uint32(v[6]), IDSequence: uint32(v[7]),
		})
	}
	return out, errors.Join(errs...)
}

// readInNetNS reads path on an OS thread switched into the namespace nsfd
// (nsfd < 0: the calling thread's namespace). /proc/thread-self/net follows
// the thread's namespace.
func readInNetNS(nsfd int, path string) ([]byte, error) {
	if nsfd < 0 {
		runtime.LockOSThread() // thread-self must stay the caller's thread
		defer runtime.UnlockOSThread()
		return os.ReadFile(path)
	}
	type result struct {
		b   []byte
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{nil, fmt.Errorf("open own network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			c <- result{nil, fmt.Errorf("enter the queue's network namespace: %w", err)}
			return
		}
		b, rerr := os.ReadFile(path)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		c <- result{b, rerr}
	}()
	r := <-c
	return r.b, r.err
}
