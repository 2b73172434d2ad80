package observe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TracefsRoot is where tracefs is (or gets) mounted.
const TracefsRoot = "/sys/kernel/tracing"

// InstancePrefix starts the name of every tracefs instance finproxy creates:
// finproxy-<pid>-<n>, n counting the observers of one process.
const InstancePrefix = "finproxy-"

// traceEvents are enabled in the instance; the first four are required.
var traceEvents = []struct {
	path     string
	required bool
}{
	{"sock/inet_sock_set_state", true},
	{"tcp/tcp_retransmit_skb", true},
	{"tcp/tcp_send_reset", true},
	{"tcp/tcp_receive_reset", true},
	{"tcp/tcp_retransmit_synack", false},
}

// traceBufferKB is the per-CPU ring buffer of the instance (the kernel's default for an
// instance is about 1.4 MB). One state change is about 80 bytes.
const traceBufferKB = 4096

var instanceSeq atomic.Uint64

var staleRE = regexp.MustCompile(`^` + InstancePrefix + `(\d+)(?:-\d+)?$`)

// traceInstance is a tracefs instance of this process with the socket events enabled.
type traceInstance struct {
	dir    string
	pipe   *os.File
	marker *os.File
}

// ensureTracefs mounts tracefs at TracefsRoot unless it is mounted there already.
func ensureTracefs() error {
	if _, err := os.Stat(filepath.Join(TracefsRoot, "instances")); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", TracefsRoot, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount tracefs at %s: %w", TracefsRoot, err)
	}
	if _, err := os.Stat(filepath.Join(TracefsRoot, "instances")); err != nil {
		return fmt.Errorf("tracefs at %s has no instances: %w", TracefsRoot, err)
	}
	return nil
}

// RemoveStaleInstances removes the tracefs instances named finproxy-<pid>[-n] whose
// process is gone (left behind by a finproxy that was killed) and returns their
// directories. When tracefs is not mounted at TracefsRoot (as in the mount namespace of
// `ip netns exec`, which mounts a fresh /sys) it mounts it, the instances being global;
// when it cannot, there is nothing it could remove. It suits `finproxy cleanup`.
func RemoveStaleInstances() ([]string, error) {
	if ensureTracefs() != nil {
		return nil, nil
	}
	return removeStaleInstances(filepath.Join(TracefsRoot, "instances"), processAlive)
}

// removeInstance removes a tracefs instance directory (a variable for tests).
var removeInstance = os.Remove

// instanceGone reports whether removing an instance failed because someone else removed it
// first: ENOENT, or ENODEV from tracefs while the other removal is under way (seen in CI:
// `finproxy cleanup` beside tests whose observers remove stale instances as they start).
func instanceGone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

// removeStaleInstances removes the instances under dir whose process alive says is gone.
// An instance that vanishes meanwhile was removed by another observer starting at the same
// time: it is neither an error nor reported as removed here.
func removeStaleInstances(dir string, alive func(pid int) bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		m := staleRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || pid == os.Getpid() || alive(pid) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := removeInstance(path); err != nil {
			if !instanceGone(err) {
				errs = append(errs, err)
			}
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}

// RemoveInstancesOf removes the tracefs instances of the finproxy process pid
// (finproxy-<pid>[-n]) and returns their directories. The caller knows that process is
// dead (a watchdog whose run was killed): it does not check.
func RemoveInstancesOf(pid int) ([]string, error) {
	if ensureTracefs() != nil {
		return nil, nil
	}
	// The instance is busy until the dead process's last thread released its trace_pipe,
	// which may be a moment after the pipe that told the caller it died.
	var all []string
	for i := 0; ; i++ {
		removed, err := removeStaleInstances(filepath.Join(TracefsRoot, "instances"), func(p int) bool { return p != pid })
		all = append(all, removed...)
		if !errors.Is(err, syscall.EBUSY) || i == 200 {
			return all, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// openTraceInstance creates and configures an instance and opens its trace_pipe. The
// events are recorded from the moment it returns, read or not. warnings lists what did
// not work but is not fatal.
func openTraceInstance(f Filter) (t *traceInstance, warnings []string, err error) {
	if err := ensureTracefs(); err != nil {
		return nil, nil, err
	}
	if removed, err := RemoveStaleInstances(); err != nil {
		warnings = append(warnings, fmt.Sprintf("removing stale tracefs instances: %v", err))
	} else if len(removed) > 0 {
		warnings = append(warnings, fmt.Sprintf("removed stale tracefs instances %s", strings.Join(removed, ", ")))
	}
	name := fmt.Sprintf("%s%d-%d", InstancePrefix, os.Getpid(), instanceSeq.Add(1))
	dir := filepath.Join(TracefsRoot, "instances", name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, warnings, fmt.Errorf("create tracefs instance: %w", err)
	}
	t = &traceInstance{dir: dir}
	defer func() {
		if err != nil {
			t.close()
			t = nil
		}
	}()
	if err := t.write("trace_clock", "mono"); err != nil {
		return t, warnings, err
	}
	if err := t.write("buffer_size_kb", strconv.Itoa(traceBufferKB)); err != nil {
		warnings = append(warnings, err.Error())
	}
	for _, ev := range traceEvents {
		if expr := f.tracefsFilter(ev.path); expr != "" {
			if err := t.write(filepath.Join("events", ev.path, "filter"), expr); err != nil {
				warnings = append(warnings, fmt.Sprintf("%v (the event is filtered in user space only)", err))
			}
		}
		if err := t.write(filepath.Join("events", ev.path, "enable"), "1"); err != nil {
			if ev.required {
				return t, warnings, err
			}
			warnings = append(warnings, err.Error())
		}
	}
	if t.marker, err = os.OpenFile(filepath.Join(dir, "trace_marker"), os.O_WRONLY, 0); err != nil {
		return t, warnings, err
	}
	// trace_pipe supports poll and O_NONBLOCK: os.Open puts it in Go's poller, so a read
	// deadline interrupts a blocked read.
	if t.pipe, err = os.Open(filepath.Join(dir, "trace_pipe")); err != nil {
		return t, warnings, err
	}
	return t, warnings, nil
}

func (t *traceInstance) write(file, val string) error {
	p := filepath.Join(t.dir, file)
	if err := os.WriteFile(p, []byte(val+"\n"), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", val, p, err)
	}
	return nil
}

// read calls fn with each line of trace_pipe until ctx ends (nil) or reading fails.
func (t *traceInstance) read(ctx context.Context, fn func(line string)) error {
	stop := context.AfterFunc(ctx, func() { _ = t.pipe.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sc := bufio.NewScanner(t.pipe)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	err := sc.Err()
	if ctx.Err() != nil && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)) {
		return nil
	}
	if err == nil {
		err = errors.New("trace_pipe ended")
	}
	return err
}

// mark writes a line to the instance's trace_marker; it comes out of trace_pipe as a
// tracing_mark_write record in time order with the events.
func (t *traceInstance) mark(text string) error {
	_, err := t.marker.WriteString(text)
	return err
}

// overruns sums the events the ring buffer overwrote before they were read.
func (t *traceInstance) overruns() uint64 {
	var n uint64
	stats, _ := filepath.Glob(filepath.Join(t.dir, "per_cpu", "cpu*", "stats"))
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "overrun: "); ok {
				c, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n
}

// close disables the events and removes the instance. The reader must have returned.
func (t *traceInstance) close() error {
	// The fields stay set: a concurrent mark gets os.ErrClosed.
	if t.pipe != nil {
		t.pipe.Close()
	}
	if t.marker != nil {
		t.marker.Close()
	}
	_ = t.write("events/enable", "0")
	var err error
	for i := 0; i < 50; i++ {
		// EBUSY while a reader still holds trace_pipe (it is being released).
		if err = os.Remove(t.dir); err == nil || instanceGone(err) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove tracefs instance: %w", err)
}
