package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fpclient "github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/lab"
)

// served is a `finproxy serve` on the lab's router (forward hook), driven through its
// unix socket.
type served struct {
	sock   string // the API's unix socket
	cmd    *exec.Cmd
	c      *fpclient.Client
	out    strings.Builder // stdout: the summary at exit
	errOut *lockedBuf
	done   chan error
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServe(t *testing.T, topo *lab.Topology, args ...string) *served {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	s := &served{sock: sock, errOut: &lockedBuf{}, done: make(chan error, 1)}
	s.cmd = exec.Command(finproxyBin, append([]string{"serve", "--netns", topo.Router, "--hook", "forward",
		"--unix", sock}, args...)...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Stdout = &s.out
	pr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			fmt.Fprintln(s.errOut, sc.Text())
			if strings.Contains(sc.Text(), "finproxy: ready:") {
				once.Do(func() { close(ready) })
			}
		}
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("finproxy serve not ready in 20s:\n%s", s.errOut)
	}
	s.c = fpclient.New("unix:" + sock)
	return s
}

// stop ends serve with SIGTERM (its process group: ip netns exec execs in place) and
// waits for it.
func (s *served) stop(t *testing.T) {
	if s.cmd.ProcessState != nil || s.done == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("finproxy serve exited with %v:\n%s", err, s.errOut)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		t.Errorf("finproxy serve did not stop within 10s of SIGTERM")
	}
	s.done = nil
	t.Logf("finproxy serve stderr:\n%s\nstdout:\n%s", s.errOut, s.out.String())
}

// hookLines are the router's iptables lines that mention finproxy.
func hookLines(t *testing.T, topo *lab.Topology) string {
	t.Helper()
	out, err := topo.Command(context.Background(), "router", "iptables-save", "-t", "mangle").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToUpper(l), "FINPROXY") && !strings.HasPrefix(l, ":") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// startSink runs a server in the server namespace that reads each connection to EOF and
// closes; it prints one JSON record per connection.
func startSink(t *testing.T, topo *lab.Topology) func() string {
	t.Helper()
	var out strings.Builder
	cmd := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", topo.ServerAddr.String()+":8080", "--mode", "sink", "--count", "0")
	pr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startGroup(t, cmd)
	ready := make(chan struct{})
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
				continue
			}
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("sink server not ready")
	}
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
}

// connect runs n connections from the client namespace, each sending 1000 bytes and
// reading to EOF; it fails the test if one did not.
func connect(t *testing.T, topo *lab.Topology, n int) {
	t.Helper()
	out, err := topo.Command(context.Background(), "client", finproxyBin, "app", "client",
		"--connect", topo.ServerAddr.String()+":8080", "--mode", "send-shutdown-read", "--bytes", "1000",
		"--count", fmt.Sprint(n)).CombinedOutput()
	if err != nil {
		t.Errorf("client: %v:\n%s", err, out)
	}
}

// A rule set put in place through the API acts on the next connection: the client's
// first FIN dropped, its retransmission accepted; after reset the FIN passes.
func TestServeReplaceTakesEffect(t *testing.T) {
	topo := newLab(t)
	startSink(t, topo)
	s := startServe(t, topo)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if h := hookLines(t, topo); h != "" {
		t.Errorf("hooks before any rule set:\n%s", h)
	}
	if _, err := s.c.LoadPreset(ctx, "lost-fin", 8080); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(t, topo); !strings.Contains(h, "--dport 8080") {
		t.Errorf("no hooks for port 8080 after the preset:\n%s", h)
	}
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	connect(t, topo, 1)
	fins := clientFINs(t, ev, 2)
	if fins[0].Verdict != "drop" || fins[0].Rule != "drop-first-client-fin" || fins[1].Verdict != "accept" || fins[1].Seq != fins[0].Seq {
		t.Errorf("client FINs %+v, want the first dropped by drop-first-client-fin and its retransmission accepted", fins)
	}
	if _, err := s.c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	connect(t, topo, 1)
	if f := clientFINs(t, ev, 1); f[0].Verdict != "accept" || f[0].Rule != "" {
		t.Errorf("client FIN after reset: %+v, want accepted by no rule", f[0])
	}
	cs, err := s.c.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Rules) == 0 || cs.Rules[0].Dropped != 1 {
		t.Errorf("counters %+v", cs.Rules)
	}
	// finproxy ctl reaches the default listener, 127.0.0.1:8474 in the router's namespace.
	out, err := exec.Command(finproxyBin, "ctl", "--netns", topo.Router, "counters").Output()
	if err != nil {
		t.Fatalf("finproxy ctl counters: %v", err)
	}
	var viaCtl fpclient.Counters
	if err := json.Unmarshal(out, &viaCtl); err != nil || len(viaCtl.Rules) == 0 || viaCtl.Rules[0].Dropped != 1 {
		t.Errorf("finproxy ctl counters: %v:\n%s", err, out)
	}
	bad := exec.Command(finproxyBin, "ctl", "--netns", topo.Router, "replace", "-")
	bad.Stdin = strings.NewReader("[target]\nport = 8080\n[[rule]]\nname = \"x\"\naction = \"dorp\"\n")
	out, err = bad.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "request:5:10: rule[1].action: ") {
		t.Errorf("finproxy ctl replace of an invalid rule set: %v:\n%s\nwant exit 1 and check's positioned problem", err, out)
	}
	// /metrics as Prometheus' own checker sees it.
	nstest.RequireTool(t, "promtool")
	m, err := s.c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(string(m))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v:\n%s", err, out)
	}
	if want := `finproxy_rule_segments_total{outcome="dropped",rule="drop-first-client-fin"} 1`; !strings.Contains(string(m), want) {
		t.Errorf("metrics lack %s:\n%s", want, m)
	}
	s.stop(t)
	iptablesClean(t, topo, "router")
}

// clientFINs reads events until n client FINs have come.
func clientFINs(t *testing.T, ev *fpclient.Events, n int) []fpclient.Event {
	t.Helper()
	var out []fpclient.Event
	for len(out) < n {
		e, err := ev.Next()
		if err != nil {
			t.Fatalf("events: %v (client FINs so far: %+v)", err, out)
		}
		if e.Side == "client" && strings.Contains(e.Flags, "FIN") {
			out = append(out, e)
		}
	}
	return out
}

const passFINs = `name = "pass-fins"
[target]
port = 8080
[[rule]]
name = "pass-fin"
has_flags = "FIN"
action = "pass"
`

const delayFINs = `name = "delay-fins"
[target]
port = 8080
[[rule]]
name = "delay-client-fin"
side = "client"
has_flags = "FIN"
action = "delay"
delay = "2ms"
`

// Every segment of a connection queued (a different scope: the hooks move).
const passData = `name = "pass-data"
[target]
port = 8080
[[rule]]
name = "pass-data"
payload = "some"
action = "pass"
`

// 100 replacements while connections run: every connection completes with its bytes,
// every queued segment gets a verdict and none is dropped (no rule drops), the kernel
// drops nothing, and the hooks are those of the last rule set, then none after stop.
func TestServeReplaceUnderLoad(t *testing.T) {
	topo := newLab(t)
	sink := startSink(t, topo)
	s := startServe(t, topo)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := s.c.Replace(ctx, []byte(passFINs)); err != nil {
		t.Fatal(err)
	}
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	type conn struct {
		client      string
		incarnation int
	}
	var (
		mu      sync.Mutex
		events  int
		lost    []error
		dropped []fpclient.Event
		fins    = map[conn]string{} // the sides whose FIN the rules saw
		evDone  = make(chan struct{})
	)
	go func() {
		defer close(evDone)
		for {
			e, err := ev.Next()
			if errors.Is(err, fpclient.ErrLost) {
				mu.Lock()
				lost = append(lost, err)
				mu.Unlock()
				continue
			}
			if err != nil {
				return
			}
			mu.Lock()
			events++
			if e.Verdict != "accept" {
				dropped = append(dropped, e)
			}
			if strings.Contains(e.Flags, "FIN") {
				c := conn{e.Client, e.Incarnation}
				if !strings.Contains(fins[c], e.Side) {
					fins[c] += e.Side
				}
			}
			mu.Unlock()
		}
	}()

	const clients, perClient = 8, 500
	start := time.Now()
	var wg sync.WaitGroup
	loadDone := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			connect(t, topo, perClient)
		}()
	}
	var loadTime time.Duration
	go func() { wg.Wait(); loadTime = time.Since(start); close(loadDone) }()
	var want string
	duringLoad := 0
	sets := []string{delayFINs, passFINs}
	for i := range 100 {
		set := sets[i%2]
		if i%10 == 9 {
			set = passData
		}
		if i == 99 {
			set = passFINs
		}
		if _, err := s.c.Replace(ctx, []byte(set)); err != nil {
			t.Fatalf("replacement %d: %v", i+1, err)
		}
		select {
		case <-loadDone:
		default:
			duringLoad++
		}
		if i == 9 {
			// The first rule set that needs every segment: the hooks widen, and stay so.
			want = hookLines(t, topo)
		}
		time.Sleep(10 * time.Millisecond)
	}
	replaced := time.Since(start)
	<-loadDone
	if duringLoad < 50 {
		t.Errorf("only %d of the 100 replacements came while the connections ran (%v): the load is too short to test anything", duringLoad, loadTime)
	}
	time.Sleep(300 * time.Millisecond) // the last verdicts' events

	if h := hookLines(t, topo); h != want {
		t.Errorf("hooks after 100 replacements:\n%s\nwant those of the first (same) rule set:\n%s", h, want)
	}
	cs, err := s.c.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q := cs.Queue
	t.Logf("%d connections in %v (%.0f/s); 100 replacements in %v, %d during the load; queue %+v; %d events",
		clients*perClient, loadTime, float64(clients*perClient)/loadTime.Seconds(), replaced, duringLoad, q, events)
	if q.Received != q.Verdicts || q.KernelDropped != 0 || q.UserDropped != 0 || q.ENOBUFS != 0 || q.VerdictErrors != 0 {
		t.Errorf("queue: %+v: segments lost or without a verdict", q)
	}
	mu.Lock()
	if len(dropped) > 0 {
		t.Errorf("%d segments dropped though no rule drops; first %+v", len(dropped), dropped[0])
	}
	if len(lost) > 0 {
		t.Errorf("the event stream lost events: %v", lost)
	}
	// Every connection's FINs went through the rules: no moment without hooks.
	both := 0
	for _, sides := range fins {
		if len(sides) == len("clientserver") {
			both++
		}
	}
	if both != clients*perClient {
		t.Errorf("the rules saw both FINs of %d connections, want all %d (%d with at least one)", both, clients*perClient, len(fins))
	}
	mu.Unlock()
	var delayed, passed uint64
	for _, r := range cs.Rules {
		delayed += r.Delayed
		passed += r.Passed
		if r.Dropped != 0 {
			t.Errorf("rule %s dropped %d", r.Rule, r.Dropped)
		}
	}
	if delayed == 0 || passed == 0 {
		t.Errorf("delayed %d, passed %d: the rule sets did not both act during the load", delayed, passed)
	}
	var n int
	for _, l := range strings.Split(strings.TrimSpace(sink()), "\n") {
		var rec struct {
			Received int64  `json:"received"`
			Error    string `json:"error"`
		}
		if json.Unmarshal([]byte(l), &rec) == nil {
			n++
			if rec.Received != 1000 || rec.Error != "" {
				t.Errorf("server connection: %s", l)
			}
		}
	}
	if n != clients*perClient {
		t.Errorf("the server saw %d connections, want %d", n, clients*perClient)
	}
	s.stop(t)
	<-evDone
	iptablesClean(t, topo, "router")
}

// SIGKILL of finproxy serve leaves no hooks: its watchdog removes them within a second.
func TestServeSIGKILLRemovesHooks(t *testing.T) {
	topo := newLab(t)
	s := startServe(t, topo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.c.LoadPreset(ctx, "lost-fin", 8080); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(t, topo); !strings.Contains(h, "--dport 8080") {
		t.Fatalf("no hooks to remove:\n%s", h)
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-s.done
	s.done = nil // killed on purpose: stop has nothing to check
	for {
		h := hookLines(t, topo)
		if h == "" {
			t.Logf("hooks gone %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatalf("hooks still there 1 s after SIGKILL:\n%s", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	iptablesClean(t, topo, "router")
}
