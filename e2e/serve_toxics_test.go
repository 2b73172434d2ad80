package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/finproxy/finproxy/lab"
)

// connRecord is a connection's JSON record from finproxy app client or server.
type connRecord struct {
	Local     string  `json:"local"`
	Sent      int64   `json:"sent"`
	Received  int64   `json:"received"`
	ElapsedMS float64 `json:"elapsed_ms"`
	Error     string  `json:"error"`
}

// recordingServer starts finproxy app server in mode on port and keeps the records it
// prints, one per connection; next waits for the next one.
type recordingServer struct {
	recs chan connRecord
}

func startRecordingServer(t *testing.T, topo *lab.Topology, port, mode string) *recordingServer {
	t.Helper()
	cmd := topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", topo.ServerAddr.String()+":"+port, "--mode", mode, "--count", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	startGroup(t, cmd)
	s := &recordingServer{recs: make(chan connRecord, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r connRecord
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				s.recs <- r
			}
		}
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("app server not listening in 10 s")
	}
	return s
}

func (s *recordingServer) next(t *testing.T) connRecord {
	t.Helper()
	select {
	case r := <-s.recs:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no record from the server in 15 s")
		return connRecord{}
	}
}

// runClient runs one connection of finproxy app client to host:port in the client
// namespace and returns its record and whether it did what its mode expects.
func runClient(t *testing.T, topo *lab.Topology, port, mode string, extra ...string) (connRecord, bool) {
	t.Helper()
	args := append([]string{"app", "client", "--connect", topo.ServerAddr.String() + ":" + port, "--mode", mode, "--count", "1"}, extra...)
	out, err := topo.Command(context.Background(), "client", finproxyBin, args...).Output()
	var rec connRecord
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		json.Unmarshal([]byte(l), &rec)
	}
	return rec, err == nil
}

// Toxiproxy's own client adds the toxics that need a timer or a byte count; each is
// checked on a real client and server: reset_peer and timeout with a timeout (the client
// sees ECONNRESET no earlier than the timeout, and not much later), limit_data (the
// server gets exactly that many bytes, then a reset), bandwidth (a transfer takes as long
// as the rate says); a toxic of type rules, finproxy's own rule table; and a proxy moved
// to another upstream.
func TestServeToxiproxyTimedToxics(t *testing.T) {
	topo := newLab(t)
	startProc(t, topo.Command(context.Background(), "server", finproxyBin, "app", "server",
		"--listen", topo.ServerAddr.String()+":8080", "--mode", "reply-wait-close", "--count", "0"), "ready")
	sink := startRecordingServer(t, topo, "8081", "sink")
	s := startServe(t, topo)
	tc := toxiproxy.NewClient(forwardToUnix(t, s.sock))
	host := topo.ServerAddr.String()
	app, err := tc.CreateProxy("app", host+":8080", host+":8080")
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := tc.CreateProxy("bulk", host+":8081", host+":8081")
	if err != nil {
		t.Fatal(err)
	}
	const slack = 300 // ms a loaded 2-CPU VM may add

	// reset_peer 500 ms: the reply is dropped, the connection reset 500 ms later.
	if _, err := app.AddToxic("rst", "reset_peer", "downstream", 1, toxiproxy.Attributes{"timeout": 500}); err != nil {
		t.Fatal(err)
	}
	rec, ok := runClient(t, topo, "8080", "expect-reset")
	if !ok || rec.ElapsedMS < 500 || rec.ElapsedMS > 500+slack {
		t.Errorf("reset_peer 500 ms: %+v (ok %v), want ECONNRESET after 500 to %d ms", rec, ok, 500+slack)
	}
	t.Logf("reset_peer timeout 500 ms: ECONNRESET after %.1f ms", rec.ElapsedMS)
	mustRemove(t, app, "rst")

	// timeout 700 ms: the reply is dropped, the connection reset 700 ms after it.
	if _, err := app.AddToxic("to", "timeout", "downstream", 1, toxiproxy.Attributes{"timeout": 700}); err != nil {
		t.Fatal(err)
	}
	rec, ok = runClient(t, topo, "8080", "expect-reset")
	if !ok || rec.ElapsedMS < 700 || rec.ElapsedMS > 700+slack {
		t.Errorf("timeout 700 ms: %+v (ok %v), want ECONNRESET after 700 to %d ms", rec, ok, 700+slack)
	}
	t.Logf("timeout 700 ms: ECONNRESET after %.1f ms", rec.ElapsedMS)
	mustRemove(t, app, "to")
	if rec, ok := runClient(t, topo, "8080", "request-close"); !ok {
		t.Errorf("after the toxics were removed: %+v", rec)
	}

	// A rule table of finproxy's own as a toxic: the server's reply 250 ms late.
	table := "[[rule]]\nname = \"slow-reply\"\nside = \"server\"\npayload = \"some\"\naction = \"delay\"\ndelay = \"250ms\"\n"
	if _, err := app.AddToxic("mine", "rules", "downstream", 1, toxiproxy.Attributes{"rules": table}); err != nil {
		t.Fatal(err)
	}
	rec, ok = runClient(t, topo, "8080", "request-close")
	if !ok || rec.ElapsedMS < 250 || rec.ElapsedMS > 250+slack {
		t.Errorf("rules toxic delaying the reply 250 ms: %+v (ok %v), want 250 to %d ms", rec, ok, 250+slack)
	}
	t.Logf("rules toxic (reply delayed 250 ms): %.1f ms", rec.ElapsedMS)
	mustRemove(t, app, "mine")

	// limit_data 10000 upstream: of 200000 bytes the server gets exactly 10000, then a reset.
	if _, err := bulk.AddToxic("ld", "limit_data", "upstream", 1, toxiproxy.Attributes{"bytes": 10000}); err != nil {
		t.Fatal(err)
	}
	rec, ok = runClient(t, topo, "8081", "send-shutdown-read", "--bytes", "200000", "--timeout", "5s")
	srec := sink.next(t)
	if ok || srec.Received != 10000 || srec.Error != "ECONNRESET" {
		t.Errorf("limit_data 10000: server %+v, client %+v (ok %v); want the server to get 10000 bytes then ECONNRESET, the client to fail", srec, rec, ok)
	}
	t.Logf("limit_data 10000: server received %d bytes, then %s; client: %s after %.1f ms", srec.Received, srec.Error, rec.Error, rec.ElapsedMS)
	mustRemove(t, bulk, "ld")

	// bandwidth 100 KB/s upstream: 300000 bytes take at least 3 s.
	base, ok := runClient(t, topo, "8081", "send-shutdown-read", "--bytes", "300000")
	if srec := sink.next(t); !ok || srec.Received != 300000 {
		t.Fatalf("without toxics: client %+v, server %+v", base, srec)
	}
	if _, err := bulk.AddToxic("bw", "bandwidth", "upstream", 1, toxiproxy.Attributes{"rate": 100}); err != nil {
		t.Fatal(err)
	}
	rec, ok = runClient(t, topo, "8081", "send-shutdown-read", "--bytes", "300000", "--timeout", "20s")
	srec = sink.next(t)
	rate := 300000 / rec.ElapsedMS // bytes per ms: KB/s
	if !ok || srec.Received != 300000 || rate > 100 || rate < 70 {
		t.Errorf("bandwidth 100 KB/s: client %+v (ok %v), server %+v: %.1f KB/s, want 70 to 100", rec, ok, srec, rate)
	}
	t.Logf("bandwidth 100 KB/s: 300000 bytes in %.0f ms (%.1f KB/s); without: %.1f ms", rec.ElapsedMS, rate, base.ElapsedMS)

	// A proxy moved in place: its listen port now reaches the new upstream.
	moved := startRecordingServer(t, topo, "8083", "reply-wait-close")
	if err := app.Delete(); err != nil { // one proxy per upstream port
		t.Fatal(err)
	}
	mv, err := tc.CreateProxy("mv", host+":18082", host+":8080")
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := runClient(t, topo, "18082", "request-close"); !ok {
		t.Fatalf("through mv before the move: %+v", rec)
	}
	mv.Upstream = host + ":8083"
	if err := mv.Save(); err != nil {
		t.Fatalf("moving mv's upstream: %v", err)
	}
	rec, ok = runClient(t, topo, "18082", "request-close")
	if !ok {
		t.Errorf("through mv after the move: %+v", rec)
	}
	if srec := moved.next(t); srec.Received == 0 {
		t.Errorf("the new upstream's record: %+v, want the request", srec)
	}
	if err := tc.ResetState(); err != nil {
		t.Fatal(err)
	}
	s.stop(t)
	iptablesClean(t, topo, "router")
}
