package scenario

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
)

// proc is an application the lab started: the leader of a process group of its own
// (everything it forks stays in the group unless it leaves it), its output (stdout and
// stderr together) kept line by line. It is stopped as a group, and nothing waits on a
// pipe that a descendant still holds: the output is read from a pipe that the lab closes
// itself once the group is gone.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer
	pgid int
	// rd is the read end of the output pipe; readDone is closed when the reader stops.
	rd       *os.File
	readDone chan struct{}
	// exited is closed once the leader has been waited for; err is Wait's error then.
	exited chan struct{}
	err    error
	// ready is closed at the first line containing want (when want is not empty).
	want    string
	ready   chan struct{}
	readyMu sync.Once
	// stop is what the lab did to end it (zero when it exited by itself), from stopAt.
	mu     sync.Mutex
	stop   Stop
	stopAt time.Time
	// taken is how much of the output earlier runs took (a server for the whole lab).
	taken int
	reg   *Procs
}

// Stop says how the lab ended an application that had not exited by itself.
type Stop struct {
	// Signal is the last signal the lab sent its process group ("SIGTERM", "SIGKILL").
	Signal string `json:"signal"`
	// Status is what the leader's wait said: "exit status 0", "signal: terminated".
	Status string `json:"status"`
	// GraceMS is how long it was given between SIGTERM and SIGKILL; TookMS how long it
	// took from the first signal until its whole process group was gone.
	GraceMS float64 `json:"grace_ms"`
	TookMS  float64 `json:"took_ms"`
}

// startProc starts argv in role's namespace of t as the leader of a new process group.
// want, when not empty, is the text whose first appearance in the output closes ready.
func startProc(t *lab.Topology, reg *Procs, name, role string, argv []string, want string) (*proc, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: empty command", name)
	}
	// Not tied to a context: the lab stops it as a group (Stop), whatever ends the run.
	cmd := t.Command(context.Background(), role, argv[0], argv[1:]...)
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: output pipe: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = wr, wr
	// A group of its own, so that stopping it reaches what it forked; killed if the lab
	// dies (SIGKILL included: the group's leader at least, which most daemons follow).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, rd: rd, readDone: make(chan struct{}), exited: make(chan struct{}),
		want: want, ready: make(chan struct{}), reg: reg}
	if err := reg.start(cmd, p.kill); err != nil {
		rd.Close()
		wr.Close()
		return nil, fmt.Errorf("start %s %q: %w", name, argv, err)
	}
	wr.Close() // the application's copies are the only writers left
	p.pgid = cmd.Process.Pid
	go p.read()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) read() {
	defer close(p.readDone)
	sc := bufio.NewScanner(p.rd)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		p.out.WriteLine(line)
		if p.want != "" && strings.Contains(line, p.want) {
			p.readyMu.Do(func() { close(p.ready) })
		}
	}
}

// waitReady waits until the application printed its ready text, exited, or done closed.
func (p *proc) waitReady(done <-chan struct{}) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		// Its last lines may still be in the pipe.
		select {
		case <-p.ready:
			return nil
		case <-p.readDone:
		case <-time.After(100 * time.Millisecond):
		}
		select {
		case <-p.ready:
			return nil
		default:
		}
		return fmt.Errorf("exited (%v) before printing %q; output:\n%s", p.err, p.want, p.out.String())
	case <-done:
		return fmt.Errorf("no %q yet; output so far:\n%s", p.want, p.out.String())
	}
}

// alive reports whether the leader has not been waited for, or anything else is left in
// its process group.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return syscall.Kill(-p.pgid, 0) == nil
	default:
		return true
	}
}

// Stop ends the application's whole process group: SIGTERM, then SIGKILL once grace has
// passed with anything of the group still running. It returns once the leader has been
// waited for and the group is empty (or after SIGKILL, which cannot be refused), and
// closes the output pipe, whoever still holds its other end. It records what it did
// unless the application had already exited by itself and left nothing behind.
func (p *proc) Stop(grace time.Duration) {
	defer p.finish()
	if !p.alive() {
		return
	}
	defer p.setTook()
	p.setStop("SIGTERM", grace)
	killGroup(p.cmd.Process, syscall.SIGTERM)
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.alive() {
		select {
		case <-deadline.C:
			p.Kill()
			return
		case <-tick.C:
		}
	}
}

// Kill sends SIGKILL to the group at once and waits for the leader.
func (p *proc) Kill() {
	p.kill()
	<-p.exited
	// Members other than the leader die with SIGKILL too; they are reaped by init.
}

func (p *proc) kill() {
	p.setStop("SIGKILL", -1)
	killGroup(p.cmd.Process, syscall.SIGKILL)
}

// killGroup signals the process group that proc leads (never pid 0 or 1: kill(0) would
// be the lab's own group).
func killGroup(proc *os.Process, sig syscall.Signal) {
	if proc != nil && proc.Pid > 1 {
		_ = syscall.Kill(-proc.Pid, sig)
	}
}

func (p *proc) setStop(sig string, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopAt.IsZero() {
		p.stopAt = time.Now()
	}
	p.stop.Signal = sig
	if grace >= 0 {
		p.stop.GraceMS = float64(grace.Microseconds()) / 1000
	}
}

func (p *proc) setTook() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop.TookMS = float64(time.Since(p.stopAt).Microseconds()) / 1000
}

// takeOutput returns what it printed since the last call.
func (p *proc) takeOutput() string {
	out := p.out.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	from := min(p.taken, len(out))
	p.taken = len(out)
	return out[from:]
}

// finish closes the output pipe after the reader had a moment to drain it, and takes the
// application off the registry.
func (p *proc) finish() {
	select {
	case <-p.readDone:
	case <-time.After(200 * time.Millisecond):
		// A process that left the group (setsid) still holds the pipe: stop reading.
	}
	p.rd.Close()
	<-p.readDone
	p.reg.remove(p.pgid)
}

// Stopped returns what the lab did to end it, nil if it exited by itself.
func (p *proc) Stopped() *Stop {
	<-p.exited
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop.Signal == "" {
		return nil
	}
	s := p.stop
	s.Status = statusText(p.err)
	return &s
}

// Err is the leader's exit error (nil for status 0); only after it exited.
func (p *proc) Err() error {
	<-p.exited
	return p.err
}

// Output is what it printed so far.
func (p *proc) Output() string { return p.out.String() }

func statusText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// Procs is every process group a lab has running: what a second interrupt kills at once.
type Procs struct {
	mu     sync.Mutex
	kills  map[int]func()
	killed bool
}

// NewProcs returns an empty registry.
func NewProcs() *Procs { return &Procs{kills: map[int]func(){}} }

// start starts cmd, which must make a process group of its own (Setpgid), and registers
// kill for that group. Once KillAll has run it starts nothing.
func (r *Procs) start(cmd *exec.Cmd, kill func()) error {
	if r == nil {
		return cmd.Start()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.killed {
		return errors.New("not started: the lab is being killed")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.kills[cmd.Process.Pid] = kill
	return nil
}

func (r *Procs) remove(pgid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.kills, pgid)
}

// KillAll sends SIGKILL to every process group still registered and refuses new ones:
// what the second interrupt does. Those waiting on them return soon after, and the lab's
// teardown (namespaces, tracefs instance) runs as usual.
func (r *Procs) KillAll() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.killed = true
	for _, kill := range r.kills {
		kill()
	}
}

// sweep ends every process still in the roles' namespaces of t, which only the lab's
// applications and what they forked can be in: one that left its process group (a
// daemon that detached with setsid) escapes Stop, not this. SIGTERM, then SIGKILL after
// grace. It returns a line per process found, for the run's warnings.
func sweep(t *lab.Topology, grace time.Duration, roles ...string) []string {
	var notes []string
	var left []lab.Process
	for _, role := range roles {
		ps, err := t.Processes(role)
		if err != nil {
			notes = append(notes, fmt.Sprintf("processes left in the %s namespace: %v", role, err))
			continue
		}
		for _, p := range ps {
			notes = append(notes, fmt.Sprintf("process %d (%s) was left in the %s namespace after its process group was stopped: ended by the lab", p.Pid, p.Comm, role))
			_ = syscall.Kill(p.Pid, syscall.SIGTERM)
		}
		left = append(left, ps...)
	}
	deadline := time.Now().Add(grace)
	for len(left) > 0 {
		alive := left[:0]
		for _, p := range left {
			if syscall.Kill(p.Pid, 0) == nil && !zombie(p.Pid) {
				alive = append(alive, p)
			}
		}
		left = alive
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return notes
}

// zombie reports whether pid has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] == 'Z'
	}
	return false
}

// HeldSocket is a socket a server process holds whose connection the kernel ended: the
// application never called close() (a file descriptor leak).
type HeldSocket struct {
	Pid   int    `json:"pid"`
	Comm  string `json:"comm"`
	Inode uint32 `json:"inode"`
}

// heldSockets reads the held closed sockets of every process in the server namespace.
func heldSockets(t *lab.Topology) map[uint32]HeldSocket {
	out := map[uint32]HeldSocket{}
	ps, err := t.Processes(lab.RoleServer)
	if err != nil {
		return out
	}
	for _, p := range ps {
		inodes, err := observe.HeldClosedSockets("", p.Pid)
		if err != nil {
			continue // gone
		}
		for _, in := range inodes {
			if h, ok := out[in]; !ok || p.Pid < h.Pid {
				out[in] = HeldSocket{Pid: p.Pid, Comm: p.Comm, Inode: in}
			}
		}
	}
	return out
}

// newHeldSockets returns the sockets in after that were not in before, by inode.
func newHeldSockets(before, after map[uint32]HeldSocket) []HeldSocket {
	var out []HeldSocket
	for in, h := range after {
		if _, ok := before[in]; !ok {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b HeldSocket) int { return cmp.Compare(a.Inode, b.Inode) })
	return out
}
