package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	fpclient "github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/lab"
)

// forwardToUnix serves 127.0.0.1:<port> in the test's namespace by relaying each
// connection to the unix socket sock (serve's API lives in the router's namespace, and
// Toxiproxy's client only speaks TCP). It returns host:port.
func forwardToUnix(t *testing.T, sock string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}

// appClient runs one connection of the built-in client in the client namespace and
// returns its record (elapsed_ms, error) and whether it succeeded.
func appClient(t *testing.T, topo *lab.Topology, mode string, extra ...string) (rec struct {
	Local     string  `json:"local"`
	ElapsedMS float64 `json:"elapsed_ms"`
	Error     string  `json:"error"`
}, ok bool) {
	t.Helper()
	args := append([]string{"app", "client", "--connect", topo.ServerAddr.String() + ":8080", "--mode", mode, "--count", "1"}, extra...)
	out, err := topo.Command(context.Background(), "client", finproxyBin, args...).Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		json.Unmarshal([]byte(l), &rec)
	}
	return rec, err == nil
}

// Toxiproxy's own Go client drives finproxy serve: a proxy on the server, then latency,
// reset_peer, timeout, slow_close and lost_final_ack one after the other, each checked on
// a real client and server, then reset.
func TestServeToxiproxyClient(t *testing.T) {
	topo := newLab(t)
	srv := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", topo.ServerAddr.String()+":8080", "--mode", "reply-wait-close", "--count", "0")
	startProc(t, srv, "ready")
	s := startServe(t, topo)
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })

	up := topo.ServerAddr.String() + ":8080"
	p, err := tc.CreateProxy("app", up, up)
	if err != nil {
		t.Fatal(err)
	}
	base, ok := appClient(t, topo, "request-close")
	if !ok {
		t.Fatalf("a connection through the proxy without toxics failed: %+v", base)
	}

	// latency: the reply comes at least 300 ms later.
	if _, err := p.AddToxic("lat", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 300}); err != nil {
		t.Fatal(err)
	}
	rec, ok := appClient(t, topo, "request-close")
	if !ok || rec.ElapsedMS < 300 {
		t.Errorf("under latency 300 ms: %+v (ok %v), want at least 300 ms (without: %.1f ms)", rec, ok, base.ElapsedMS)
	}
	t.Logf("latency 300 ms: %.1f ms, without: %.1f ms", rec.ElapsedMS, base.ElapsedMS)
	mustRemove(t, p, "lat")

	// reset_peer: the client's read ends in ECONNRESET.
	if _, err := p.AddToxic("rst", "reset_peer", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if rec, ok := appClient(t, topo, "expect-reset"); !ok {
		t.Errorf("under reset_peer: %+v, want ECONNRESET", rec)
	}
	mustRemove(t, p, "rst")

	// timeout 0: the reply never comes.
	if _, err := p.AddToxic("to", "timeout", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if rec, ok := appClient(t, topo, "request-close", "--timeout", "1s"); ok || !strings.Contains(rec.Error, "timeout") {
		t.Errorf("under timeout: %+v (ok %v), want the read to time out", rec, ok)
	}
	mustRemove(t, p, "to")

	// slow_close upstream: the client's FIN reaches the server 300 ms late.
	ev = reopen(t, ctx, s, ev)
	if _, err := p.AddToxic("sc", "slow_close", "upstream", 1, toxiproxy.Attributes{"delay": 300}); err != nil {
		t.Fatal(err)
	}
	if rec, ok := appClient(t, topo, "request-close"); !ok {
		t.Errorf("under slow_close: %+v", rec)
	}
	fin := nextEvent(t, ev, func(e fpclient.Event) bool { return e.Side == "client" && strings.Contains(e.Flags, "FIN") })
	if fin.Rule != "sc" || fin.Verdict != "accept" || time.Duration(fin.HeldNS) < 300*time.Millisecond {
		t.Errorf("client FIN under slow_close: %+v, want held 300 ms by sc", fin)
	}
	mustRemove(t, p, "sc")

	// finproxy's own fault: the final ACK lost, the server retransmits its FIN from LAST_ACK.
	ev = reopen(t, ctx, s, ev)
	if _, err := p.AddToxic("laf", "lost_final_ack", "downstream", 1, nil); err != nil {
		t.Fatal(err)
	}
	rec, ok = appClient(t, topo, "request-close")
	if !ok {
		t.Errorf("under lost_final_ack: %+v", rec)
	}
	// This connection's events only (the previous one may still be closing).
	of := func(side, flags string) func(fpclient.Event) bool {
		return func(e fpclient.Event) bool {
			return e.Client == rec.Local && e.Side == side && strings.Contains(e.Flags, flags)
		}
	}
	f1 := nextEvent(t, ev, of("server", "FIN"))
	ack := nextEvent(t, ev, func(e fpclient.Event) bool { return of("client", "ACK")(e) && e.Ack == f1.Seq+1 })
	f2 := nextEvent(t, ev, of("server", "FIN"))
	if ack.Verdict != "drop" || ack.Rule != "laf:drop-final-ack" {
		t.Errorf("client's ACK of the server's FIN: %+v, want dropped by laf:drop-final-ack", ack)
	}
	if f2.Seq != f1.Seq || f2.TimeNS <= f1.TimeNS {
		t.Errorf("server FINs %+v then %+v: want a retransmission from LAST_ACK", f1, f2)
	}

	if err := tc.ResetState(); err != nil {
		t.Fatal(err)
	}
	ev = reopen(t, ctx, s, ev)
	rec, ok = appClient(t, topo, "request-close")
	if !ok {
		t.Errorf("after reset: %+v", rec)
	}
	if e := nextEvent(t, ev, of("server", "FIN")); e.Rule != "" {
		t.Errorf("after reset a rule acted: %+v", e)
	}
	s.stop(t)
	iptablesClean(t, topo, "router")
}

func mustRemove(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	if err := p.RemoveToxic(name); err != nil {
		t.Fatal(err)
	}
}

// reopen closes an event stream and opens a new one: it has only what comes next.
func reopen(t *testing.T, ctx context.Context, s *served, old *fpclient.Events) *fpclient.Events {
	t.Helper()
	old.Close()
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	return ev
}

func nextEvent(t *testing.T, ev *fpclient.Events, match func(fpclient.Event) bool) fpclient.Event {
	t.Helper()
	for {
		e, err := ev.Next()
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		if match(e) {
			return e
		}
	}
}

// startGroup starts cmd in a process group of its own, which cleanup kills (and waits
// for): what the test started, and only that, goes.
func startGroup(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
}

// startProc starts cmd in its own process group (startGroup) and waits for ready on its
// stdout.
func startProc(t *testing.T, cmd *exec.Cmd, ready string) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startGroup(t, cmd)
	got := make(chan bool, 1)
	go func() {
		buf := make([]byte, 4096)
		var seen strings.Builder
		for {
			n, err := out.Read(buf)
			seen.Write(buf[:n])
			if strings.Contains(seen.String(), ready) {
				got <- true
				io.Copy(io.Discard, out)
				return
			}
			if err != nil {
				got <- false
				return
			}
		}
	}()
	select {
	case ok := <-got:
		if !ok {
			t.Fatalf("%v ended before %q", cmd.Args, ready)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%v: no %q in 10 s", cmd.Args, ready)
	}
}

// toxiproxyVersion is the Toxiproxy whose client and CLI the tests use.
const toxiproxyVersion = "v2.12.0"

// The same flow through toxiproxy-cli (installed from its module, as scripts/bench
// installs Toxiproxy's server), as a shell script: testdata/serve/toxiproxy-cli.sh.
func TestServeToxiproxyCLI(t *testing.T) {
	topo := newLab(t)
	bin := t.TempDir()
	install := exec.Command("go", "install", "github.com/Shopify/toxiproxy/v2/cmd/cli@"+toxiproxyVersion)
	install.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install toxiproxy-cli %s: %v\n%s", toxiproxyVersion, err, out)
	}
	srv := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", topo.ServerAddr.String()+":8080", "--mode", "reply-wait-close", "--count", "0")
	startProc(t, srv, "ready")
	s := startServe(t, topo)
	script := exec.Command("bash", "testdata/serve/toxiproxy-cli.sh")
	script.Env = append(os.Environ(),
		"CLI="+filepath.Join(bin, "cli"),
		"TOXIPROXY_URL=http://"+forwardToUnix(t, s.sock),
		"FINPROXY="+finproxyBin,
		"CLIENT_NS="+topo.Client,
		"UP="+topo.ServerAddr.String()+":8080",
		"SOCK="+s.sock)
	out, err := script.CombinedOutput()
	t.Logf("toxiproxy-cli.sh:\n%s", out)
	if err != nil {
		t.Errorf("toxiproxy-cli.sh: %v", err)
	}
	s.stop(t)
	iptablesClean(t, topo, "router")
}

// A proxy whose listen is not its upstream: the kernel sends its connections to the
// upstream (DNAT in serve's namespace) and its toxics act on them; two proxies at once,
// each toxic on its own proxy's connections; a deleted proxy no longer redirects, and
// serve leaves no rule in any table.
func TestServeToxiproxyRedirect(t *testing.T) {
	topo := newLab(t)
	for _, port := range []string{"8080", "8081"} {
		srv := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
			"--listen", topo.ServerAddr.String()+":"+port, "--mode", "reply-wait-close", "--count", "0")
		startProc(t, srv, "ready")
	}
	s := startServe(t, topo)
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	host := topo.ServerAddr.String()
	a, err := tc.CreateProxy("a", host+":18080", host+":8080")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tc.CreateProxy("b", host+":18081", host+":8081")
	if err != nil {
		t.Fatal(err)
	}
	via := func(port string, extra ...string) (float64, string, bool) {
		t.Helper()
		var rec struct {
			Local     string  `json:"local"`
			Remote    string  `json:"remote"`
			ElapsedMS float64 `json:"elapsed_ms"`
			Error     string  `json:"error"`
		}
		args := append([]string{"app", "client", "--connect", host + ":" + port, "--mode", "request-close", "--count", "1"}, extra...)
		out, err := topo.Command(context.Background(), "client", finproxyBin, args...).Output()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			json.Unmarshal([]byte(l), &rec)
		}
		return rec.ElapsedMS, rec.Error, err == nil
	}
	for _, port := range []string{"18080", "18081"} {
		if ms, e, ok := via(port); !ok {
			t.Fatalf("a connection to listen %s:%s failed (%s, %.1f ms): no redirection to the upstream?\n%s", host, port, e, ms, s.errOut)
		}
	}
	// latency on b alone: b's connections take 300 ms more, a's do not.
	if _, err := b.AddToxic("lat", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 300}); err != nil {
		t.Fatal(err)
	}
	msB, e, ok := via("18081")
	if !ok || msB < 300 {
		t.Errorf("through b under latency 300 ms: %.1f ms (%s), want at least 300 ms", msB, e)
	}
	msA, e, ok := via("18080")
	if !ok || msA >= 300 {
		t.Errorf("through a, with b's latency: %.1f ms (%s), want under 300 ms", msA, e)
	}
	t.Logf("b (latency 300 ms): %.1f ms; a: %.1f ms", msB, msA)
	// reset_peer on a: a's client sees ECONNRESET.
	if _, err := a.AddToxic("rst", "reset_peer", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if _, e, ok := via("18080"); ok || e != "ECONNRESET" {
		t.Errorf("through a under reset_peer: ok %v, error %q; want ECONNRESET", ok, e)
	}
	// b deleted: its listen port redirects nowhere (nothing listens on it).
	if err := b.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, e, ok := via("18081", "--timeout", "2s"); ok || e != "ECONNREFUSED" {
		t.Errorf("to b's listen port after b was deleted: ok %v, error %q; want ECONNREFUSED", ok, e)
	}
	if err := a.Delete(); err != nil {
		t.Fatal(err)
	}
	s.stop(t)
	iptablesClean(t, topo, "router")
}

// In local mode (client and server in serve's namespace) the redirected connection is
// one connection to finproxy: the client's segments are taken after nat OUTPUT translated
// them, so a toxic on the client's stream (slow_close upstream) and one on the server's
// (latency downstream) both act, and the events name one client.
func TestServeToxiproxyRedirectLocal(t *testing.T) {
	topo := newLab(t)
	host := topo.ServerAddr.String()
	srv := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", host+":8080", "--mode", "reply-wait-close", "--count", "0")
	startProc(t, srv, "ready")
	s := startServe(t, topo, "--netns", topo.Server, "--hook", "local")
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := tc.CreateProxy("app", host+":18080", host+":8080")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	if _, err := p.AddToxic("lat", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 200}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("sc", "slow_close", "upstream", 1, toxiproxy.Attributes{"delay": 300}); err != nil {
		t.Fatal(err)
	}
	ev = reopen(t, ctx, s, ev)
	var rec struct {
		Local     string  `json:"local"`
		ElapsedMS float64 `json:"elapsed_ms"`
		Error     string  `json:"error"`
	}
	out, err := topo.Command(context.Background(), "server", finproxyBin, "app", "client",
		"--connect", host+":18080", "--mode", "request-close", "--count", "1").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		json.Unmarshal([]byte(l), &rec)
	}
	if err != nil || rec.ElapsedMS < 200 {
		t.Errorf("through the proxy in serve's namespace under latency 200 ms: %+v (%v), want at least 200 ms", rec, err)
	}
	fin := nextEvent(t, ev, func(e fpclient.Event) bool { return e.Side == "client" && strings.Contains(e.Flags, "FIN") })
	if fin.Rule != "sc" || time.Duration(fin.HeldNS) < 300*time.Millisecond || fin.Client != rec.Local || !strings.HasSuffix(fin.Server, ":8080") {
		t.Errorf("client FIN: %+v, want held 300 ms by sc, client %s, server on the upstream's port 8080", fin, rec.Local)
	}
	t.Logf("latency 200 ms: %.1f ms; client FIN held %v", rec.ElapsedMS, time.Duration(fin.HeldNS))
	s.stop(t)
	iptablesClean(t, topo, "server")
}

// SIGKILL of finproxy serve leaves no redirection: its watchdog removes the DNAT rules
// with the hooks.
func TestServeSIGKILLRemovesRedirects(t *testing.T) {
	topo := newLab(t)
	s := startServe(t, topo)
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	host := topo.ServerAddr.String()
	if _, err := tc.CreateProxy("a", host+":18080", host+":8080"); err != nil {
		t.Fatal(err)
	}
	nat := func() string {
		out, err := topo.Command(context.Background(), "router", "iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v: %s", err, out)
		}
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "finproxy") {
				ours = append(ours, l)
			}
		}
		return strings.Join(ours, "\n")
	}
	if n := nat(); !strings.Contains(n, "--to-destination "+host+":8080") {
		t.Fatalf("no DNAT rule to remove:\n%s", n)
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-s.done
	s.done = nil // killed on purpose
	for {
		n := nat()
		if n == "" {
			t.Logf("redirections gone %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatalf("redirections still there 1 s after SIGKILL:\n%s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	iptablesClean(t, topo, "router")
}

// serve --observe-netns: GET /v1/connections has each connection of the target with both
// sides' timelines and segments (the lab report's shapes), and the event stream carries
// the sockets' state changes; a lost final ACK shows as the server's retransmission in
// LAST_ACK.
func TestServeObservedConnections(t *testing.T) {
	topo := newLab(t)
	host := topo.ServerAddr.String()
	srv := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", host+":8080", "--mode", "reply-wait-close", "--count", "0")
	startProc(t, srv, "ready")
	s := startServe(t, topo, "--observe-netns", topo.Client+","+topo.Server)
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := tc.CreateProxy("app", host+":18080", host+":8080")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("laf", "lost_final_ack", "downstream", 1, nil); err != nil {
		t.Fatal(err)
	}
	ev, err := s.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Close() })
	var rec struct {
		Local string `json:"local"`
		Error string `json:"error"`
	}
	out, err := topo.Command(context.Background(), "client", finproxyBin, "app", "client",
		"--connect", host+":18080", "--mode", "request-close", "--count", "1").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		json.Unmarshal([]byte(l), &rec)
	}
	if err != nil {
		t.Fatalf("client: %v %+v", err, rec)
	}
	// The server's socket goes to LAST_ACK, on the stream.
	for {
		sc, err := ev.NextObserved()
		if err != nil {
			t.Fatalf("observed events: %v", err)
		}
		if sc.Type == "state" && sc.New == "LAST_ACK" && sc.Dst == rec.Local {
			t.Logf("stream: %s %s -> %s at %s", sc.Src, sc.Old, sc.New, sc.Time.Format(time.StampMicro))
			break
		}
	}
	// The server retransmits its FIN from LAST_ACK (the first one after about 200 ms).
	var conn *fpclient.Connection
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		cs, err := s.c.Connections(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cs.Connections {
			if c.Client.Addr == rec.Local && len(c.Server.Retransmits) > 0 && slices.Contains(c.Server.States, "CLOSE") {
				conn = &cs.Connections[i]
			}
		}
		if conn != nil {
			break
		}
	}
	if conn == nil {
		cs, _ := s.c.Connections(ctx)
		t.Fatalf("no connection of client %s with the server's retransmission and its close: %+v", rec.Local, cs)
	}
	// The client's end (its socket names the listen address) joins the upstream's.
	if !slices.Contains(conn.Client.States, "SYN_SENT") || !slices.Contains(conn.Client.States, "TIME_WAIT") {
		t.Errorf("client's states %v: want its end of the redirected connection, to TIME_WAIT", conn.Client.States)
	}
	if conn.Server.Addr != host+":8080" || conn.Server.Retransmits[0].State != "LAST_ACK" ||
		!slices.Contains(conn.Server.States, "LAST_ACK") || len(conn.Client.Segments) == 0 || len(conn.Server.Timeline) != len(conn.Server.States) {
		t.Errorf("connection: %+v", conn)
	}
	var dropped bool
	for _, sg := range conn.Client.Segments {
		dropped = dropped || sg.Rule == "laf:drop-final-ack" && sg.Verdict == "drop"
	}
	if !dropped {
		t.Errorf("client segments %+v: want the final ACK dropped by laf:drop-final-ack", conn.Client.Segments)
	}
	t.Logf("server states %v, retransmits %+v; client states %v", conn.Server.States, conn.Server.Retransmits, conn.Client.States)
	// The same through finproxy ctl.
	if out, err := exec.Command(finproxyBin, "ctl", "--addr", "unix:"+s.sock, "connections").Output(); err != nil ||
		!strings.Contains(string(out), `"addr": "`+rec.Local+`"`) || !strings.Contains(string(out), `"LAST_ACK"`) {
		t.Errorf("finproxy ctl connections: %v\n%s", err, out)
	}
	// /metrics: the server's retransmission in LAST_ACK is counted; promtool finds the
	// exposition clean.
	body, err := s.c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(string(body))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v:\n%s", err, out)
	}
	if !regexp.MustCompile(`finproxy_observed_retransmits_total\{side="server",state="LAST_ACK"\} [1-9]`).Match(body) {
		t.Errorf("no server retransmission in LAST_ACK counted:\n%s", grepLines(string(body), "finproxy_observ"))
	}
	t.Logf("metrics:\n%s", grepLines(string(body), "finproxy_observ"))
	s.stop(t)
	iptablesClean(t, topo, "router")
}
