package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a helper process: its standard output is read line by line, the end of its
// standard error kept for error messages.
type proc struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string // closed at EOF
	stderr *tail
	stdin  io.WriteCloser
	done   chan struct{} // closed when the process was waited for
	err    error         // Wait's error, valid after done
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 16<<10 {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-8<<10:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// start starts cmd as a helper. A context that ends sends SIGTERM, then SIGKILL after 10 s.
func start(name string, cmd *exec.Cmd, withStdin bool) (*proc, error) {
	p := &proc{name: name, cmd: cmd, lines: make(chan string, 64), stderr: &tail{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	// The helper dies with the thread that started it if this program is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if withStdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// expect waits for a line starting with prefix and returns it.
func (p *proc) expect(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return "", fmt.Errorf("%s ended before printing %q: %v: %s", p.name, prefix, p.err, p.stderr)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-t.C:
			return "", fmt.Errorf("%s: no %q within %v: %s", p.name, prefix, timeout, p.stderr)
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
}

// wait waits for the process to end (killing it after timeout) and returns its remaining
// output lines.
func (p *proc) wait(timeout time.Duration) ([]string, error) {
	var lines []string
	t := time.NewTimer(timeout)
	defer t.Stop()
	killed := false
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				if killed {
					return lines, fmt.Errorf("%s: killed after %v: %s", p.name, timeout, p.stderr)
				}
				if p.err != nil {
					return lines, fmt.Errorf("%s: %w: %s", p.name, p.err, p.stderr)
				}
				return lines, nil
			}
			lines = append(lines, l)
		case <-t.C:
			killed = true
			_ = p.cmd.Process.Kill()
		}
	}
}

// stop asks the process to end (SIGTERM) and waits for it.
func (p *proc) stop(timeout time.Duration) ([]string, error) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(timeout)
}

// kill ends the process if it still runs.
func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		go func() {
			for range p.lines {
			}
		}()
		<-p.done
	}
}

// memInfo is a process's resident memory, from /proc/PID/status.
type memInfo struct {
	RSS uint64 `json:"rss_bytes"` // VmRSS
	HWM uint64 `json:"hwm_bytes"` // VmHWM: peak RSS
}

func readMem(pid int) (memInfo, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memInfo{}, err
	}
	var m memInfo
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, nil
}

// clockTick is the unit of /proc's CPU times (USER_HZ: 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time (user and system, every thread) process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v", pid, errors.Join(err1, err2))
	}
	return time.Duration(u+s) * clockTick, nil
}

// machineCPU is the CPU time all CPUs have spent busy (everything but idle and iowait)
// and in all, since boot.
func machineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, v := range f[1:min(len(f), 9)] { // user to steal: guest time is in user already
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += time.Duration(n) * clockTick
		if i != 3 && i != 4 { // idle, iowait
			busy += time.Duration(n) * clockTick
		}
	}
	return busy, total, nil
}
