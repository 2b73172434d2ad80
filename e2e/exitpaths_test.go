package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/observe"
)

// Every exit path of `finproxy run` removes its hooks and its tracefs instance: the ones
// it handles (SIGTERM, SIGHUP, a closed stdout) itself, the ones it cannot (SIGKILL, a
// crash of the Go runtime) through its watchdog, within a second.

// teardownWithin is how soon after its end a run's hooks must be gone.
const teardownWithin = time.Second

// fpRun is a `finproxy run` started in a test namespace.
type fpRun struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	stderr *lockedBuffer
	exited chan struct{} // closed when Wait returned (waitErr set)
	wErr   error
}

// startFP starts `finproxy run ARGS` inside ns and waits until it is ready (its hooks in).
// wait: the test reaps it itself with (*fpRun).wait (so that a killed run stays a zombie
// until then, as under a parent that does not reap at once).
func startFP(t *testing.T, ns *nstest.NS, args ...string) *fpRun {
	t.Helper()
	r := &fpRun{stdout: &bytes.Buffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	r.cmd = ns.Command(finproxyBin, append([]string{"run"}, args...)...)
	r.cmd.Stdout = r.stdout
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = pw
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(r.stderr, sc.Text())
			if !signalled && strings.Contains(sc.Text(), "finproxy: ready") {
				ready <- true
				signalled = true
			}
		}
		if !signalled {
			ready <- false
		}
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = r.cmd.Process.Kill()
			r.wait()
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			r.wait()
			t.Fatalf("finproxy run exited before it was ready (%v):\n%s", r.wErr, r.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("finproxy run not ready after 20s:\n%s", r.stderr)
	}
	return r
}

func (r *fpRun) wait() error {
	select {
	case <-r.exited:
	default:
		r.wErr = r.cmd.Wait()
		close(r.exited)
	}
	return r.wErr
}

// leftovers lists what of finproxy the namespace's iptables and ip6tables hold (every
// line naming finproxy or NFQUEUE) and the tracefs instances of pid.
func leftovers(t *testing.T, ns *nstest.NS, pid int) []string {
	t.Helper()
	var left []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out := ns.MustRun(t, save, "-t", "mangle")
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(strings.ToUpper(l), "FINPROXY") || strings.Contains(l, "NFQUEUE") {
				left = append(left, save+": "+l)
			}
		}
	}
	return append(left, instancesOf(t, pid)...)
}

// instancesOf lists the tracefs instances of finproxy process pid.
func instancesOf(t *testing.T, pid int) []string {
	t.Helper()
	inst, err := filepath.Glob(filepath.Join(observe.TracefsRoot, "instances", fmt.Sprintf("%s%d-*", observe.InstancePrefix, pid)))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// requireHooked fails the test unless the run's chain and tracefs instance exist: the
// test would prove nothing otherwise.
func requireHooked(t *testing.T, ns *nstest.NS, pid int) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(observe.TracefsRoot, "instances")); err != nil {
		t.Fatalf("tracefs is not mounted at %s in the test's mount namespace: the tracefs checks would prove nothing", observe.TracefsRoot)
	}
	left := strings.Join(leftovers(t, ns, pid), "\n")
	if !strings.Contains(left, ":FINPROXY-Q") || !strings.Contains(left, "tracing/instances/finproxy-") {
		t.Fatalf("the running finproxy has no chain or no tracefs instance: the test would prove nothing:\n%s", left)
	}
}

// requireGoneWithin polls until nothing of run pid is left in ns, for up to d after since.
func requireGoneWithin(t *testing.T, ns *nstest.NS, r *fpRun, pid int, since time.Time, d time.Duration) {
	t.Helper()
	for {
		left := leftovers(t, ns, pid)
		if len(left) == 0 {
			t.Logf("everything of pid %d was gone %v after its end", pid, time.Since(since).Round(time.Millisecond))
			return
		}
		if time.Since(since) > d {
			if r != nil {
				t.Logf("stderr of the run and its watchdog:\n%s", r.stderr)
			}
			t.Fatalf("%v after the run's end, still there:\n%s", d, strings.Join(left, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watchdogOf returns the pid of the watchdog child of pid, 0 if it has none.
func watchdogOf(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, _, err := procState(child)
		if err != nil || ppid != pid {
			continue
		}
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child)); bytes.Contains(cmdline, []byte("__watchdog")) {
			return child
		}
	}
	t.Logf("finproxy pid %d has no watchdog child", pid)
	return 0
}

// procState reads the parent pid and the state letter of pid.
func procState(pid int) (ppid int, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0, 0, errors.New("short stat")
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err
}

// requireExitsWithin fails unless pid is gone (or a zombie) within d (pid 0: nothing).
func requireExitsWithin(t *testing.T, pid int, d time.Duration, what string) {
	t.Helper()
	if pid == 0 {
		return
	}
	deadline := time.Now().Add(d)
	for {
		_, state, err := procState(pid)
		if err != nil || state == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs %v later", what, pid, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runArgs(port int, extra ...string) []string {
	return append([]string{"-c", "lost-fin", "--port", strconv.Itoa(port)}, extra...)
}

// TestExitPathSIGKILL: a killed run's hooks and tracefs instance are gone within a second,
// with nobody running cleanup and the dead run not even reaped yet; its watchdog exits.
func TestExitPathSIGKILL(t *testing.T) {
	ns := nstest.New(t)
	r := startFP(t, ns, runArgs(18201)...)
	pid := r.cmd.Process.Pid
	requireHooked(t, ns, pid)
	wd := watchdogOf(t, pid)
	killed := time.Now()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	requireGoneWithin(t, ns, r, pid, killed, teardownWithin)
	requireExitsWithin(t, wd, teardownWithin, "the watchdog")
	if err := r.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("finproxy run: %v, want killed", err)
	}
	said := "finproxy watchdog: run pid " + strconv.Itoa(pid) + " ended without removing its hooks"
	for i := 0; !strings.Contains(r.stderr.String(), said); i++ {
		if i == 100 {
			t.Errorf("the watchdog did not say what it removed:\n%s", r.stderr)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExitPathCrash: a Go runtime crash (SIGQUIT: the goroutine dump and exit status 2 of an
// unrecovered panic in any goroutine, no deferred teardown) leaves nothing either.
func TestExitPathCrash(t *testing.T) {
	ns := nstest.New(t)
	r := startFP(t, ns, runArgs(18202)...)
	pid := r.cmd.Process.Pid
	requireHooked(t, ns, pid)
	wd := watchdogOf(t, pid)
	crashed := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	requireGoneWithin(t, ns, r, pid, crashed, teardownWithin)
	requireExitsWithin(t, wd, teardownWithin, "the watchdog")
	if err := r.wait(); err == nil {
		t.Error("finproxy run exited 0 after SIGQUIT: it did not crash, the test proves nothing")
	}
}

// TestExitPathSIGHUP: a hangup (a closed terminal, an ssh session gone) stops the run the
// way Ctrl-C does: its own teardown, the summary, exit status 0.
func TestExitPathSIGHUP(t *testing.T) {
	ns := nstest.New(t)
	r := startFP(t, ns, runArgs(18203)...)
	pid := r.cmd.Process.Pid
	requireHooked(t, ns, pid)
	wd := watchdogOf(t, pid)
	hup := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(); err != nil {
		t.Errorf("finproxy run after SIGHUP: %v, want exit status 0 (its own teardown)\n%s", err, r.stderr)
	}
	requireGoneWithin(t, ns, r, pid, hup, teardownWithin)
	requireExitsWithin(t, wd, teardownWithin, "the watchdog")
	if !strings.Contains(r.stdout.String(), "segments:") {
		t.Errorf("no summary after SIGHUP:\n%s", r.stdout)
	}
	if strings.Contains(r.stderr.String(), "watchdog: run pid") {
		t.Errorf("the watchdog removed something after a clean teardown:\n%s", r.stderr)
	}
}

// TestExitPathClosedOutput: `finproxy run ... 2>&1 | head`: with nobody reading its
// stdout and stderr, writing them fails, and the run goes on (logging never kills it);
// SIGTERM then tears it down as usual.
func TestExitPathClosedOutput(t *testing.T) {
	ns := nstest.New(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(finproxyBin, append([]string{"run"}, runArgs(18204)...)...)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	pr.Close() // the reader is gone before finproxy writes its first line
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Ready when its chain is in (its output cannot tell).
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(strings.Join(leftovers(t, ns, cmd.Process.Pid), "\n"), ":FINPROXY-Q") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("finproxy run with closed stdout/stderr ended before its hooks were in: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no chain after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It logged "hooks installed" and "ready" after that: it must still run.
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("finproxy run died writing to a closed pipe: %v (rc 141 is SIGPIPE)", err)
	case <-time.After(time.Second):
	}
	stop := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("finproxy run after SIGTERM with closed output: %v, want exit status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("finproxy run did not end 10s after SIGTERM")
	}
	requireGoneWithin(t, ns, nil, cmd.Process.Pid, stop, teardownWithin)
}

// TestOneRunPerScope: a second run on the same port in the same namespace is refused with
// a message naming the first; with --stack it runs, and the first run's SIGKILL removes
// the first run's hooks only; cleanup keeps the live run's hooks unless --force.
func TestOneRunPerScope(t *testing.T) {
	ns := nstest.New(t)
	first := startFP(t, ns, runArgs(18205, "--queue", "7410", "--no-observe")...)
	fpid := first.cmd.Process.Pid

	refused := ns.Command(finproxyBin, append([]string{"run"}, runArgs(18205, "--queue", "7411", "--no-observe", "--duration", "5s")...)...)
	out, err := refused.CombinedOutput()
	want := fmt.Sprintf("another finproxy run (pid %d, queue 7410)", fpid)
	if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "--stack") {
		t.Fatalf("second run on the same port: %v, output:\n%s\nwant a failure naming %q and --stack", err, out, want)
	}

	second := startFP(t, ns, runArgs(18205, "--queue", "7411", "--no-observe", "--stack")...)
	spid := second.cmd.Process.Pid
	if !strings.Contains(second.stderr.String(), "stacked on request") {
		t.Errorf("no warning about the stacked run:\n%s", second.stderr)
	}
	mine := func() string { return strings.Join(leftovers(t, ns, 0), "\n") }
	before := mine()
	if strings.Count(before, "-j FINPROXY-Q7411") != 8 || strings.Count(before, "-j FINPROXY-Q7410") != 8 {
		t.Fatalf("want 4 jumps per run and family:\n%s", before)
	}

	// cleanup never touches live runs' hooks (unless --force).
	out, err = exec.Command(finproxyBin, "cleanup", "--netns", ns.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	for _, pid := range []int{fpid, spid} {
		if !strings.Contains(string(out), fmt.Sprintf("its finproxy run is alive (pid %d)", pid)) {
			t.Errorf("cleanup did not report the live run %d:\n%s", pid, out)
		}
	}
	if after := mine(); after != before {
		t.Fatalf("cleanup changed live runs' hooks:\n%s\nbefore:\n%s", after, before)
	}

	killed := time.Now()
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for {
		now := mine()
		if !strings.Contains(now, "FINPROXY-Q7410") {
			break
		}
		if time.Since(killed) > teardownWithin {
			t.Fatalf("the killed run's hooks are still there after %v:\n%s", teardownWithin, now)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if now := mine(); strings.Count(now, "-j FINPROXY-Q7411") != 8 || !strings.Contains(now, ":FINPROXY-Q7411") {
		t.Errorf("the stacked run's hooks changed when the first run's watchdog removed the first's:\n%s", now)
	}

	out, err = exec.Command(finproxyBin, "cleanup", "--netns", ns.Name, "--force").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-X FINPROXY-Q7411") {
		t.Fatalf("cleanup --force: %v\n%s", err, out)
	}
	if now := mine(); now != "" {
		t.Errorf("left after cleanup --force:\n%s", now)
	}
	_ = second.cmd.Process.Signal(syscall.SIGTERM)
	if err := second.wait(); err != nil {
		t.Errorf("the stacked run after its hooks were forced away: %v\n%s", err, second.stderr)
	}
}

// TestNetnsNotFromEnvironment: FINPROXY_NETNS inherited from a user's shell does not make
// `--netns X` act in the current namespace.
func TestNetnsNotFromEnvironment(t *testing.T) {
	ns := nstest.New(t)
	cmd := exec.Command(finproxyBin, append([]string{"run", "--netns", ns.Name}, runArgs(18206, "--queue", "7412", "--no-observe")...)...)
	cmd.Env = append(os.Environ(), "FINPROXY_NETNS="+ns.Name)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "finproxy: ready") {
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	root, _ := exec.Command("iptables-save", "-t", "mangle").CombinedOutput()
	if strings.Contains(string(root), "FINPROXY-Q7412") {
		t.Error("with FINPROXY_NETNS set, `run --netns` hooked the current (root) namespace")
	}
	if !strings.Contains(ns.MustRun(t, "iptables-save", "-t", "mangle"), ":FINPROXY-Q7412") {
		t.Error("no chain in the namespace given with --netns")
	}
}

// killWithWatchdog kills a run and its watchdog (SIGKILL of both, the watchdog first), as
// `kill -9` of every finproxy process would: its hooks stay, for `cleanup` or the next run.
func killWithWatchdog(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	wd := watchdogOf(t, cmd.Process.Pid)
	if wd == 0 {
		t.Fatal("no watchdog to kill")
	}
	if err := syscall.Kill(wd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	requireExitsWithin(t, wd, 5*time.Second, "the killed watchdog")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// TestOneRunPerScopeRace: two runs on one port started at the same moment: exactly one
// hooks it, the other is refused (the overlap check and the install are one step).
func TestOneRunPerScopeRace(t *testing.T) {
	ns := nstest.New(t)
	for round := range 5 {
		type outcome struct {
			cmd   *exec.Cmd
			ready bool
			out   *lockedBuffer
		}
		results := make(chan outcome, 2)
		var cmds []*exec.Cmd
		for i := range 2 {
			cmd := ns.Command(finproxyBin, append([]string{"run"}, runArgs(18207, "--queue", strconv.Itoa(7413+i), "--no-observe")...)...)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
			go func() {
				o := outcome{cmd: cmd, out: &lockedBuffer{}}
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					fmt.Fprintln(o.out, sc.Text())
					if strings.Contains(sc.Text(), "finproxy: ready") {
						o.ready = true
						break
					}
				}
				results <- o
				for sc.Scan() {
				}
			}()
		}
		for _, cmd := range cmds {
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
		}
		var ready []outcome
		var refused string
		for range 2 {
			select {
			case o := <-results:
				if o.ready {
					ready = append(ready, o)
				} else {
					refused = o.out.String()
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no outcome after 20s")
			}
		}
		for _, o := range ready {
			_ = o.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range cmds {
			_ = cmd.Wait()
		}
		if len(ready) != 1 {
			t.Fatalf("round %d: %d of 2 runs started at once hooked port 18207, want 1; the refused one said:\n%s", round, len(ready), refused)
		}
		if !strings.Contains(refused, "another finproxy run (pid ") {
			t.Errorf("round %d: the refused run did not name the other:\n%s", round, refused)
		}
		if left := leftovers(t, ns, 0); len(left) > 0 {
			t.Fatalf("round %d: left after both ended:\n%s", round, strings.Join(left, "\n"))
		}
	}
}
