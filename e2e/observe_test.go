package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// Observation end to end: `finproxy run` and `finproxy watch` observing real programs
// (the built-in applications, each its own process) in the lab's client and server
// namespaces. The tracepoints are global: each test has ports of its own.

// proc is a program started for a test, its output collected.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	lines  chan string
	done   chan struct{}
	err    error
}

type lockedWriter struct {
	p   *proc
	buf *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.buf.Write(b)
}

// start runs argv in role's namespace. The lines of its stdout and stderr are also
// offered to waitLine.
func start(t *testing.T, topo *lab.Topology, role, name string, argv ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = topo.Command(context.Background(), role, argv[0], argv[1:]...)
	p.launch()
	return p
}

// launch starts p.cmd, collecting its output.
func (p *proc) launch() {
	t := p.t
	t.Helper()
	outR, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	var wg sync.WaitGroup
	for _, r := range []struct {
		rd  io.Reader
		buf *bytes.Buffer
	}{{outR, &p.stdout}, {errR, &p.stderr}} {
		wg.Go(func() {
			sc := bufio.NewScanner(r.rd)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			w := lockedWriter{p, r.buf}
			for sc.Scan() {
				fmt.Fprintln(w, sc.Text())
				select {
				case p.lines <- sc.Text():
				default:
				}
			}
		})
	}
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

// waitLine waits for an output line containing want.
func (p *proc) waitLine(want string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, want) {
				return
			}
		case <-p.done:
			// Lines may still be buffered.
			for {
				select {
				case l := <-p.lines:
					if strings.Contains(l, want) {
						return
					}
				default:
					p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, want, p.output())
				}
			}
		case <-deadline:
			p.t.Fatalf("%s: no %q after %v:\n%s", p.name, want, timeout, p.output())
		}
	}
}

// wait waits for the program to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v:\n%s", p.name, timeout, p.output())
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// stop sends SIGTERM and waits for the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(15 * time.Second)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("--- stdout\n%s--- stderr\n%s", p.stdout.String(), p.stderr.String())
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// server starts a built-in server in the server namespace and waits until it listens.
func server(t *testing.T, topo *lab.Topology, port uint16, args ...string) *proc {
	t.Helper()
	argv := append([]string{finproxyBin, "app", "server", "--listen", fmt.Sprintf("%s:%d", topo.ServerAddr, port)}, args...)
	p := start(t, topo, lab.RoleServer, "server", argv...)
	p.waitLine("ready", 10*time.Second)
	return p
}

// client runs a built-in client in the client namespace to completion.
func client(t *testing.T, topo *lab.Topology, port uint16, args ...string) {
	t.Helper()
	argv := append([]string{finproxyBin, "app", "client", "--connect", fmt.Sprintf("%s:%d", topo.ServerAddr, port)}, args...)
	p := start(t, topo, lab.RoleClient, "client", argv...)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("client exited %d:\n%s", code, p.output())
	}
}

func stateList(s observe.Side) []observe.State {
	var out []observe.State
	for _, e := range s.States {
		out = append(out, e.State)
	}
	return out
}

func stateEntry(s observe.Side, st observe.State) *observe.StateEntry {
	for i := range s.States {
		if s.States[i].State == st {
			return &s.States[i]
		}
	}
	return nil
}

func jsonString(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// labConn returns the one connection between the lab's client and server port.
func labConn(t *testing.T, topo *lab.Topology, port uint16, conns []observe.Connection) observe.Connection {
	t.Helper()
	var found []observe.Connection
	for _, c := range conns {
		if c.Client.Addr.Addr() == topo.ClientAddr && c.Server.Addr == netip.AddrPortFrom(topo.ServerAddr, port) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d connections from %v to %v:%d, want 1:\n%s", len(found), topo.ClientAddr, topo.ServerAddr, port, jsonString(conns))
	}
	return found[0]
}

var (
	fourWayClient = []observe.State{observe.SynSent, observe.Established, observe.FinWait1, observe.FinWait2, observe.TimeWait}
	fourWayServer = []observe.State{observe.SynRecv, observe.Established, observe.CloseWait, observe.LastAck, observe.Close}
)

// Scenario 4 through `finproxy run` in the router namespace, observing the client's and
// the server's namespaces: the report and the printed timeline show the dropped final
// ACK, the server's retransmission from LAST_ACK after it, and the client's TIME_WAIT
// whose timer restarted when it re-ACKed, all on one clock.
func TestObserveRunLostFinalACK(t *testing.T) {
	topo := newLab(t)
	const port = 18101
	dir := t.TempDir()
	report, logPath := filepath.Join(dir, "report.json"), filepath.Join(dir, "events.jsonl")
	run := start(t, topo, lab.RoleRouter, "finproxy run", finproxyBin, "run", "-c", "lost-final-ack",
		"--hook", "forward", "--port", fmt.Sprint(port), "--observe-netns", topo.Client+","+topo.Server,
		"--report", report, "--log", logPath)
	run.waitLine("finproxy: ready", 15*time.Second)
	srv := server(t, topo, port, "--mode", "echo-close", "--count", "1")
	client(t, topo, port, "--mode", "send-close", "--bytes", "1000", "--count", "1")
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("server exited %d:\n%s", code, srv.output())
	}
	// The server retransmits its FIN about 200 ms (its RTO) after the drop; the client's
	// re-ACK closes it.
	time.Sleep(1200 * time.Millisecond)
	if code := run.stop(); code != 0 {
		t.Fatalf("finproxy run exited %d:\n%s", code, run.output())
	}
	t.Logf("finproxy run:\n%s", run.output())

	rep, err := runner.ReadReport(report)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Config.Name != "lost-final-ack" || rep.Config.Port != port || rep.Observation == nil {
		t.Fatalf("report config %+v, observation %+v", rep.Config, rep.Observation)
	}
	if src := rep.Observation.Sources; !src.Trace || !src.Diag || !slices.Equal(src.NetNSs, []string{topo.Client, topo.Server}) {
		t.Errorf("observation sources %+v, want the tracepoints and sock_diag in both namespaces", src)
	}
	c := labConn(t, topo, port, rep.Connections)
	if got := stateList(c.Client); !slices.Equal(got, fourWayClient) {
		t.Errorf("client states %v, want %v", got, fourWayClient)
	}
	if got := stateList(c.Server); !slices.Equal(got, fourWayServer) {
		t.Errorf("server states %v, want %v", got, fourWayServer)
	}

	// The dropped final ACK, then the server's retransmission in LAST_ACK, then the
	// retransmitted FIN seen by finproxy, then the client's re-ACK accepted.
	var drop, refin, reack *rules.Record
	var dropAt, refinAt, reackAt time.Time
	for _, n := range c.Notes {
		r := n.Record
		if r == nil {
			t.Fatalf("note without a segment record: %+v", n)
		}
		switch {
		case r.Rule == "drop-final-ack" && r.Verdict == rules.Drop && drop == nil:
			drop, dropAt = r, n.At
		case drop != nil && r.Side == rules.Server && r.Flags.Has(segment.FIN) && refin == nil:
			refin, refinAt = r, n.At
		case refin != nil && r.Side == rules.Client && r.Flags == segment.ACK && r.Verdict == rules.Accept && reack == nil:
			reack, reackAt = r, n.At
		}
	}
	if drop == nil || refin == nil || reack == nil {
		t.Fatalf("notes: dropped final ACK %v, retransmitted server FIN %v, re-ACK %v; want all three:\n%s", drop, refin, reack, jsonString(c.Notes))
	}
	var retrans *observe.RetransmitEntry
	for i, r := range c.Server.Retransmits {
		if r.State == observe.LastAck {
			retrans = &c.Server.Retransmits[i]
			break
		}
	}
	if retrans == nil {
		t.Fatalf("server retransmissions %+v, want one in LAST_ACK", c.Server.Retransmits)
	}
	lastAck := stateEntry(c.Server, observe.LastAck)
	if !(lastAck.At.Before(dropAt) && dropAt.Before(retrans.At) && !refinAt.Before(retrans.At) && refinAt.Before(reackAt)) {
		t.Errorf("order on the shared clock: LAST_ACK %v, drop %v, retransmit %v, retransmitted FIN at finproxy %v, re-ACK %v",
			lastAck.At, dropAt, retrans.At, refinAt, reackAt)
	}
	if d := retrans.At.Sub(dropAt); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("server retransmitted %v after the drop, want about its RTO (200 ms)", d)
	}
	if close := stateEntry(c.Server, observe.Close); close == nil || close.At.Before(reackAt) {
		t.Errorf("server CLOSE %+v before the re-ACK passed finproxy (%v)", close, reackAt)
	}
	tw := c.Client.Timewait
	if tw == nil || tw.State != observe.TimeWait || len(tw.Restarts) == 0 || time.Duration(tw.Remaining) < 50*time.Second {
		t.Errorf("client timewait %+v, want TIME_WAIT, its timer restarted once, about 60 s left", tw)
	} else if d := tw.Restarts[0].Sub(refinAt); d < -25*time.Millisecond || d > 25*time.Millisecond {
		t.Errorf("client TIME_WAIT timer restarted %v from the retransmitted FIN, want within a few ms", d)
	}
	// (No owner is asserted here: the server's socket lived for about 2 ms, less than
	// the sock_diag period, so no poll saw its inode. The watch tests check owners.)

	// The human timeline says the same.
	for _, want := range []string{"DROPPED by drop-final-ack", "server  retransmit in LAST_ACK", "client  TIME_WAIT", "TIME_WAIT timer restarted"} {
		if !strings.Contains(run.out(), want) {
			t.Errorf("finproxy run's output lacks %q", want)
		}
	}
}

// watchDoc is the last line of `finproxy watch --json`.
type watchDoc struct {
	Type string `json:"type"`
	observe.Report
	CloseWait observe.Duration `json:"close_wait_threshold"`
	Leaks     []struct {
		observe.Leak
		Open bool `json:"open"`
	} `json:"leaks"`
}

// startWatch starts `finproxy watch` with args (in the root namespace: --netns and
// --observe-netns say where to look) and waits until it watches.
func startWatch(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(finproxyBin, append([]string{"watch"}, args...)...)
	p.launch()
	p.waitLine("finproxy: watching", 15*time.Second)
	return p
}

// watchResult parses the JSON lines of a finished watch: the events and the final report.
func watchResult(t *testing.T, p *proc) ([]map[string]any, watchDoc) {
	t.Helper()
	var events []map[string]any
	var doc watchDoc
	lines := strings.Split(strings.TrimSpace(p.out()), "\n")
	for i, l := range lines {
		if i == len(lines)-1 {
			if err := json.Unmarshal([]byte(l), &doc); err != nil || doc.Type != "report" {
				t.Fatalf("last line of watch --json is not the report (%v):\n%s", err, l)
			}
			break
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev["type"] == nil {
			t.Fatalf("watch --json line %d is not a typed JSON object (%v): %s", i, err, l)
		}
		events = append(events, ev)
	}
	return events, doc
}

// A plain close, client first, watched from the router namespace (--netns, as run does)
// with sock_diag in both application namespaces: exactly the four-way close states on
// each side, the client's timewait socket with its timer.
func TestObserveWatchNormalClose(t *testing.T) {
	for _, tc := range []struct {
		apps
		port uint16
	}{{closeFirstApps[0], 18102}, {closeFirstApps[1], 18106}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tool != "" {
				nstest.RequireTool(t, tc.tool)
			}
			topo := newLab(t)
			port := tc.port
			w := startWatch(t, "finproxy watch", "--netns", topo.Router, "--observe-netns", topo.Client+","+topo.Server,
				"--port", fmt.Sprint(port), "--json")
			expandArgs := func(argv []string) []string {
				out := make([]string, len(argv))
				for i, a := range argv {
					a = strings.ReplaceAll(a, "{finproxy}", finproxyBin)
					a = strings.ReplaceAll(a, "{server_addr}", topo.ServerAddr.String())
					out[i] = strings.ReplaceAll(a, "{port}", fmt.Sprint(port))
				}
				return out
			}
			ready := tc.ready
			if ready == "" {
				ready = "ready"
			}
			srv := start(t, topo, lab.RoleServer, "server", expandArgs(tc.server)...)
			srv.waitLine(ready, 10*time.Second)
			cl := start(t, topo, lab.RoleClient, "client", expandArgs(tc.client)...)
			if code := cl.wait(20 * time.Second); code != 0 {
				t.Fatalf("client exited %d:\n%s", code, cl.output())
			}
			if code := srv.wait(10 * time.Second); code != 0 {
				t.Fatalf("server exited %d:\n%s", code, srv.output())
			}
			time.Sleep(300 * time.Millisecond)
			if code := w.stop(); code != 0 {
				t.Fatalf("watch exited %d:\n%s", code, w.output())
			}
			events, doc := watchResult(t, w)
			c := labConn(t, topo, port, doc.Connections)
			t.Logf("connection:\n%s", jsonString(c))
			if got := stateList(c.Client); !slices.Equal(got, fourWayClient) {
				t.Errorf("client states %v, want %v", got, fourWayClient)
			}
			if got := stateList(c.Server); !slices.Equal(got, fourWayServer) {
				t.Errorf("server states %v, want %v", got, fourWayServer)
			}
			for _, s := range []observe.Side{c.Client, c.Server} {
				for i, e := range s.States {
					if i+1 < len(s.States) && (e.Ongoing || e.Dwell < 0 || !e.At.Add(time.Duration(e.Dwell)).Equal(s.States[i+1].At)) {
						t.Errorf("%v: state %s: dwell %v does not reach the next state", s.Addr, e.State, e.Dwell)
					}
				}
			}
			if tw := c.Client.Timewait; tw == nil || tw.State != observe.TimeWait || tw.Gone || time.Duration(tw.Remaining) < 50*time.Second {
				t.Errorf("client timewait %+v, want TIME_WAIT with about 60 s left", tw)
			}
			if n := len(c.Client.Retransmits) + len(c.Server.Retransmits) + len(c.Client.ResetsSent) + len(c.Server.ResetsSent); n != 0 {
				t.Errorf("%d retransmissions or resets in a plain close", n)
			}
			if len(doc.Leaks) != 0 {
				t.Errorf("leaks %+v", doc.Leaks)
			}
			if len(events) == 0 {
				t.Error("no event lines before the report")
			}
		})
	}
}

// An orphaned client socket (closed by its application) whose FIN is acknowledged
// becomes a timewait socket in FIN_WAIT2, and TIME_WAIT when the server's FIN arrives
// a second later (long enough for the 25 ms sock_diag polls to catch the timewait
// FIN_WAIT2 even when the whole suite loads the machine, which has delayed polls by
// 800 ms): the timeline says FIN_WAIT2 then TIME_WAIT, never CLOSE, with the
// timewait socket's timer. Two watchers at once: JSON, and plain lines (stdout is a pipe:
// no cursor codes).
func TestObserveWatchOrphanTimewait(t *testing.T) {
	topo := newLab(t)
	const port = 18103
	args := []string{"--observe-netns", topo.Client + "," + topo.Server, "--port", fmt.Sprint(port)}
	wj := startWatch(t, "finproxy watch --json", append(args, "--json")...)
	wl := startWatch(t, "finproxy watch (lines)", args...)
	srv := server(t, topo, port, "--mode", "echo-close", "--count", "1", "--close-delay", "1s")
	client(t, topo, port, "--mode", "send-close", "--bytes", "1000", "--count", "1")
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("server exited %d:\n%s", code, srv.output())
	}
	time.Sleep(300 * time.Millisecond)
	for _, w := range []*proc{wj, wl} {
		if code := w.stop(); code != 0 {
			t.Fatalf("%s exited %d:\n%s", w.name, code, w.output())
		}
	}
	events, doc := watchResult(t, wj)
	c := labConn(t, topo, port, doc.Connections)
	t.Logf("connection:\n%s", jsonString(c))
	if got := stateList(c.Client); !slices.Equal(got, fourWayClient) {
		t.Errorf("client states %v, want %v (no CLOSE)", got, fourWayClient)
	}
	// FIN_WAIT2 from the server's ACK of the client's FIN to the server's FIN (sent on
	// entering LAST_ACK, 1 s after EOF); TIME_WAIT's entry comes from the timewait
	// timer: within a few ms on a quiet machine, more when the sock_diag dumps are slowed
	// down by load.
	fw2, tw2, lastAck := stateEntry(c.Client, observe.FinWait2), stateEntry(c.Client, observe.TimeWait), stateEntry(c.Server, observe.LastAck)
	if fw2 == nil || tw2 == nil || lastAck == nil || lastAck.At.Sub(fw2.At) < 50*time.Millisecond {
		t.Errorf("client FIN_WAIT2 %+v, server LAST_ACK %+v: want the client in FIN_WAIT2 well before the server's FIN", fw2, lastAck)
	} else if d := tw2.At.Sub(lastAck.At); d < -25*time.Millisecond || d > 25*time.Millisecond {
		t.Errorf("client TIME_WAIT %v from the server's LAST_ACK, want within a few ms", d)
	}
	tw := c.Client.Timewait
	if tw == nil || tw.State != observe.TimeWait || tw.Gone || time.Duration(tw.Remaining) < 50*time.Second || time.Duration(tw.Remaining) > 60*time.Second {
		t.Fatalf("client timewait %+v, want TIME_WAIT with about 60 s left", tw)
	}
	if twe := stateEntry(c.Client, observe.TimeWait); twe == nil || !tw.FirstSeen.Before(twe.At) {
		t.Errorf("the timewait socket was first seen at %v, TIME_WAIT entered %+v: want it seen in FIN_WAIT2 first", tw.FirstSeen, twe)
	}
	if got := stateList(c.Server); !slices.Equal(got, fourWayServer) {
		t.Errorf("server states %v, want %v", got, fourWayServer)
	}
	// The stream: the tracepoint's FIN_WAIT2 -> CLOSE marked as a handoff, then the
	// derived FIN_WAIT2 -> TIME_WAIT.
	var handoff, toTW bool
	client := c.Client.Addr.String()
	for _, ev := range events {
		if ev["type"] != "state" || ev["src"] != client {
			continue
		}
		if ev["old"] == "FIN_WAIT2" && ev["new"] == "CLOSE" && ev["handoff"] == true {
			handoff = true
		}
		if ev["old"] == "FIN_WAIT2" && ev["new"] == "TIME_WAIT" && handoff {
			toTW = true
		}
	}
	if !handoff || !toTW {
		t.Errorf("events: handoff %v, then FIN_WAIT2 -> TIME_WAIT %v; want both", handoff, toTW)
	}
	lines := wl.out()
	t.Logf("watch lines:\n%s", lines)
	if strings.Contains(lines, "\x1b") {
		t.Error("plain lines contain escape codes")
	}
	for _, want := range []string{"client  ESTABLISHED -> FIN_WAIT1", "client  FIN_WAIT2: full socket handed to a timewait socket",
		"client  FIN_WAIT2 -> TIME_WAIT", "server  LAST_ACK -> CLOSE", "no socket in CLOSE_WAIT"} {
		if !strings.Contains(lines, want) {
			t.Errorf("plain lines lack %q", want)
		}
	}
}

// A server that forgets close() after EOF is reported as a CLOSE_WAIT leak naming its
// process, and --fail-on-leak makes watch exit 1; a server that closes does not.
func TestObserveWatchCloseWaitLeak(t *testing.T) {
	for _, tc := range []struct {
		mode string
		port uint16
		leak bool
	}{{"leak", 18104, true}, {"echo-close", 18105, false}} {
		t.Run(tc.mode, func(t *testing.T) {
			topo := newLab(t)
			w := startWatch(t, "finproxy watch", "--close-wait", "1s", "--fail-on-leak", "--duration", "4s",
				"--observe-netns", topo.Server, "--port", fmt.Sprint(tc.port), "--json")
			srv := server(t, topo, tc.port, "--mode", tc.mode, "--count", "1")
			client(t, topo, tc.port, "--mode", "send-close", "--bytes", "1000", "--count", "1")
			code := w.wait(15 * time.Second)
			t.Logf("watch exited %d:\n%s", code, w.output())
			events, doc := watchResult(t, w)
			if !tc.leak {
				if code != 0 || len(doc.Leaks) != 0 {
					t.Fatalf("well-behaved server: exit %d, leaks %+v; want 0, none", code, doc.Leaks)
				}
				if c := srv.wait(5 * time.Second); c != 0 {
					t.Errorf("server exited %d", c)
				}
				return
			}
			if code != 1 {
				t.Errorf("watch --fail-on-leak exited %d with a leak, want 1", code)
			}
			if len(doc.Leaks) != 1 {
				t.Fatalf("leaks %+v, want one", doc.Leaks)
			}
			l := doc.Leaks[0]
			if l.Local != netip.AddrPortFrom(topo.ServerAddr, tc.port) || l.Remote.Addr() != topo.ClientAddr {
				t.Errorf("leak %v <- %v, want the server's end of the connection", l.Local, l.Remote)
			}
			if l.Owner == nil || l.Owner.Pid != srv.pid() || l.Owner.Comm != "finproxy" {
				t.Errorf("leak owner %+v, want pid %d (finproxy app server)", l.Owner, srv.pid())
			}
			if time.Duration(l.Age) < 2*time.Second || !l.Open || l.Source != observe.SourceTrace {
				t.Errorf("leak age %v, open %v, source %s; want about 4 s, still open, from the tracepoint", l.Age, l.Open, l.Source)
			}
			var leakEvents int
			for _, ev := range events {
				if ev["type"] == "leak" {
					leakEvents++
				}
			}
			if leakEvents != 1 {
				t.Errorf("%d leak events, want 1", leakEvents)
			}
			if !strings.Contains(w.output(), "CLOSE_WAIT leak") {
				t.Errorf("stderr does not say why the exit status is 1")
			}
		})
	}
}

// On a terminal (a pseudo-terminal made by script(1)) watch redraws a table in place.
func TestObserveWatchTerminal(t *testing.T) {
	nstest.RequireTool(t, "script")
	topo := newLab(t)
	const port = 18107
	cmdline := fmt.Sprintf("%s watch --port %d --observe-netns %s --close-wait 1s --duration 3s", finproxyBin, port, topo.Server)
	p := &proc{t: t, name: "script finproxy watch", lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command("script", "-qfec", cmdline, "/dev/null")
	p.launch()
	p.waitLine("finproxy: watching", 15*time.Second)
	srv := server(t, topo, port, "--mode", "leak", "--count", "1")
	client(t, topo, port, "--mode", "send-close", "--bytes", "10", "--count", "1")
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("watch exited %d:\n%s", code, p.output())
	}
	out := p.out()
	t.Logf("%q", out)
	for _, want := range []string{"\x1b[", "\x1b[J", "CONNECTION", "CLOSE_WAIT", "LEAKS", fmt.Sprintf("pid %d (finproxy)", srv.pid()), "1 CLOSE_WAIT leak(s) of 1s or more"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q", want)
		}
	}
}

// `finproxy cleanup` removes the tracefs instance of an observer that died, also when run
// with --netns (whose `ip netns exec` mounts a /sys without tracefs). Without --netns it
// runs in a network namespace of its own (unshare --net, the host's mounts): the iptables
// rules of the host, which this test did not make, are not its to clean.
func TestObserveCleanupStaleInstance(t *testing.T) {
	nstest.RequireTool(t, "unshare")
	topo := newLab(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{"unshare", "--net", finproxyBin, "cleanup"}, {finproxyBin, "cleanup", "--netns", topo.Router}} {
		args := argv[slices.Index(argv, "cleanup"):]
		dir := filepath.Join(observe.TracefsRoot, "instances", fmt.Sprintf("%s%d-1", observe.InstancePrefix, dead.Process.Pid))
		if err := os.Mkdir(dir, 0o700); err != nil {
			nstest.Skip(t, "cannot create a tracefs instance: "+err.Error())
		}
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if _, serr := os.Stat(dir); err != nil || !errors.Is(serr, os.ErrNotExist) {
			os.Remove(dir)
			t.Fatalf("%q: %v, instance still there (%v):\n%s", args, err, serr, out)
		}
		if !strings.Contains(string(out), "removed "+dir) {
			// Every observer that starts removes stale instances too: another finproxy or
			// test on this machine may have been first.
			t.Logf("%q did not remove %s itself (someone else did):\n%s", args, dir, out)
		}
	}
}
