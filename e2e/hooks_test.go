package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/lab"
)

// startRun starts `finproxy run` in the router namespace and waits until its hooks are in.
func startRun(t *testing.T, topo *lab.Topology, args ...string) *exec.Cmd {
	t.Helper()
	cmd := topo.Command(context.Background(), "router", finproxyBin, append([]string{"run", "--hook", "forward"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var seen strings.Builder
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "finproxy: ready") {
				ready <- ""
				for sc.Scan() {
				}
				return
			}
		}
		ready <- seen.String()
	}()
	select {
	case out := <-ready:
		if out != "" {
			t.Fatalf("finproxy run exited before it was ready:\n%s", out)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("finproxy run: not ready after 15s")
	}
	return cmd
}

func iptablesHas(t *testing.T, topo *lab.Topology, role, want string) bool {
	t.Helper()
	out, err := topo.Command(context.Background(), role, "iptables-save", "-t", "mangle").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	return strings.Contains(string(out), want)
}

// oneConnection runs a built-in server and client through the router and reports whether
// the client's exchange completed.
func oneConnection(t *testing.T, topo *lab.Topology, port string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := topo.Command(ctx, "server", finproxyBin, "app", "server", "--listen", topo.ServerAddr.String()+":"+port, "--mode", "echo-close", "--count", "1")
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.Contains(line, "ready") {
		t.Fatalf("server not ready: %q", line)
	}
	cl := topo.Command(ctx, "client", finproxyBin, "app", "client", "--connect", topo.ServerAddr.String()+":"+port, "--mode", "send-close", "--bytes", "100", "--count", "1")
	if b, err := cl.CombinedOutput(); err != nil {
		return &exec.ExitError{ProcessState: cl.ProcessState, Stderr: b}
	}
	return nil
}

func TestSIGTERMRemovesHooks(t *testing.T) {
	topo := newLab(t)
	cmd := startRun(t, topo, "-c", "lost-fin", "--port", "8080")
	if !iptablesHas(t, topo, "router", "FINPROXY") {
		t.Fatal("no FINPROXY chain while finproxy runs: the test would prove nothing")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("finproxy run after SIGTERM: %v (want exit 0)", err)
	}
	iptablesClean(t, topo, "router")
}

func TestSIGKILLBypassThenCleanup(t *testing.T) {
	topo := newLab(t)
	cmd := startRun(t, topo, "-c", "lost-fin", "--port", "8080")
	// The watchdog would remove the hooks at once (TestExitPathSIGKILL): kill it too.
	killWithWatchdog(t, cmd)
	if !iptablesHas(t, topo, "router", "--queue-bypass") {
		t.Fatal("after SIGKILL the NFQUEUE rules are gone: the bypass check would prove nothing")
	}
	// No process is bound to the queue: --queue-bypass lets traffic through.
	if err := oneConnection(t, topo, "8080"); err != nil {
		t.Errorf("traffic does not flow with finproxy killed (bypass): %v", err)
	}
	// cleanup from the root namespace, entering the router's with --netns.
	out, err := exec.Command(finproxyBin, "cleanup", "--netns", topo.Router).CombinedOutput()
	if err != nil {
		t.Fatalf("finproxy cleanup: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed") {
		t.Errorf("cleanup reported nothing removed:\n%s", out)
	}
	iptablesClean(t, topo, "router")
	if err := oneConnection(t, topo, "8081"); err != nil {
		t.Errorf("traffic after cleanup: %v", err)
	}
}

func TestStaleChainReplacedAtStart(t *testing.T) {
	topo := newLab(t)
	first := startRun(t, topo, "-c", "lost-fin", "--port", "8080")
	killWithWatchdog(t, first)
	if !iptablesHas(t, topo, "router", "FINPROXY-Q") {
		t.Fatal("no chain left by the killed run: the test would prove nothing")
	}
	// A new run on the same queue removes the dead run's chain and installs its own.
	second := startRun(t, topo, "-c", "lost-fin", "--port", "8080")
	_ = second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Errorf("second run: %v", err)
	}
	iptablesClean(t, topo, "router")
}

// `finproxy run --netns NAME` from the root namespace does all its work in NAME: its
// chain appears there (and not here), and SIGTERM removes it.
func TestRunNetnsFlag(t *testing.T) {
	topo := newLab(t)
	cmd := exec.Command(finproxyBin, "run", "-c", "lost-fin", "--hook", "forward", "--port", "8080", "--netns", topo.Router)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	ready := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "finproxy: ready") {
			ready = true
			break
		}
	}
	if !ready {
		t.Fatal("finproxy run --netns: never ready")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if !iptablesHas(t, topo, "router", "FINPROXY-Q") {
		t.Error("no finproxy chain in the router namespace")
	}
	if out, _ := exec.Command("iptables-save", "-t", "mangle").CombinedOutput(); strings.Contains(string(out), "FINPROXY-Q7400") {
		t.Error("finproxy's chain appeared in the root namespace")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("run --netns after SIGTERM: %v", err)
	}
	iptablesClean(t, topo, "router")
}
