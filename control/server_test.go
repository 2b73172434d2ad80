package control

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// rig is the API over a real runner.Service whose kernel is nfq's fake: segments are
// delivered as the kernel would queue them, and their verdicts read back.
type rig struct {
	t   *testing.T
	svc *runner.Service
	srv *Server
	ipt *nfq.Fake
	k   *nfq.FakeKernel
	c   *client.Client
	url string

	mu       sync.Mutex
	verdicts map[uint32]bool
	id       uint32
}

func newRig(t *testing.T, token string) *rig {
	t.Helper()
	r := &rig{t: t, ipt: nfq.NewFake(), verdicts: map[uint32]bool{}}
	var srv *Server
	svc, err := runner.Serve(context.Background(), runner.ServeOptions{
		Logger:   slog.New(slog.DiscardHandler),
		IPT4:     r.ipt,
		OnRecord: func(rec rules.Record) { srv.Record(rec) },
		OpenQueue: func(ctx context.Context, c nfq.Config, h nfq.Handler) (*nfq.Queue, error) {
			q, k, err := nfq.OpenFake(ctx, c, h)
			r.k = k
			return q, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.k.OnVerdict = func(id uint32, accept bool, _ []byte) {
		r.mu.Lock()
		r.verdicts[id] = accept
		r.mu.Unlock()
	}
	srv = New(Options{Backend: svc, Token: token, Logger: slog.New(slog.DiscardHandler),
		Check: func(c *rules.Config) error {
			if c.Target.Port == 0 && len(c.Target.Addresses) == 0 {
				return errors.New("no target scope")
			}
			return nil
		}})
	hs := httptest.NewServer(srv)
	r.svc, r.srv, r.url = svc, srv, hs.URL
	r.c = client.New(hs.URL, client.WithToken(token))
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		svc.Close()
	})
	return r
}

var (
	cliAddr = [4]byte{10, 0, 0, 1}
	srvAddr = [4]byte{10, 0, 0, 2}
)

const (
	tFIN = 0x01
	tSYN = 0x02
	tACK = 0x10
)

// send delivers an IPv4 TCP segment and returns its verdict (true: accepted).
func (r *rig) send(src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags byte) bool {
	r.t.Helper()
	return r.deliver(src, dst, sport, dport, seq, ack, flags, 0, true)
}

// sendData delivers a data segment (10 bytes) and returns its verdict.
func (r *rig) sendData(src, dst [4]byte, sport, dport uint16, seq, ack uint32) bool {
	r.t.Helper()
	return r.deliver(src, dst, sport, dport, seq, ack, tACK|0x08, 10, true)
}

// serverDataNoWait is serverData, reporting false when the data segment's verdict did
// not come at once (delayed).
func (r *rig) serverDataNoWait(cp uint16) bool {
	r.send(cliAddr, srvAddr, cp, 8080, 1000, 0, tSYN)
	r.send(srvAddr, cliAddr, 8080, cp, 5000, 1001, tSYN|tACK)
	r.send(cliAddr, srvAddr, cp, 8080, 1001, 5001, tACK)
	return r.deliver(srvAddr, cliAddr, 8080, cp, 5001, 1001, tACK|0x08, 10, false)
}

func (r *rig) deliver(src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags byte, n int, must bool) bool {
	r.t.Helper()
	b := make([]byte, 40+n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(40+n))
	b[8], b[9] = 64, 6
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint32(b[24:], seq)
	binary.BigEndian.PutUint32(b[28:], ack)
	b[32], b[33] = 5<<4, flags
	r.id++
	r.k.Deliver(r.id, b)
	r.k.Flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.verdicts[r.id]
	if !ok && must {
		r.t.Fatalf("segment %d: no verdict", r.id)
	}
	return v
}

// clientFIN opens a connection from port cp and sends the client's FIN; it returns
// whether the FIN was accepted.
func (r *rig) clientFIN(cp uint16) bool {
	r.send(cliAddr, srvAddr, cp, 8080, 1000, 0, tSYN)
	r.send(srvAddr, cliAddr, 8080, cp, 5000, 1001, tSYN|tACK)
	r.send(cliAddr, srvAddr, cp, 8080, 1001, 5001, tACK)
	return r.send(cliAddr, srvAddr, cp, 8080, 1001, 5001, tFIN|tACK)
}

const dropFIN = `name = "drop-fin"
[target]
port = 8080
[[rule]]
name = "drop-client-fin"
side = "client"
has_flags = "FIN"
action = "drop"
[[rule]]
name = "delay-server-fin"
side = "server"
has_flags = "FIN"
action = "delay"
delay = "1ms"
`

func hooks(ipt *nfq.Fake) string {
	var out []string
	for _, l := range ipt.Rules() {
		if strings.Contains(l, "FINPROXY") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestAPIReplace(t *testing.T) {
	r := newRig(t, "")
	ctx := context.Background()
	if !r.clientFIN(40000) {
		t.Fatal("FIN dropped before any rule set")
	}
	rs, err := r.c.Replace(ctx, []byte(dropFIN))
	if err != nil {
		t.Fatal(err)
	}
	if rs.Name != "drop-fin" || len(rs.Rules) != 2 || !rs.Rules[0].Enabled || rs.Target.Port != 8080 || rs.Source != dropFIN {
		t.Errorf("rule set after PUT: %+v", rs)
	}
	if rs.Queued != "control" || rs.Hooked != "control" {
		t.Errorf("queued %q, hooked %q: want control, control", rs.Queued, rs.Hooked)
	}
	if !strings.Contains(hooks(r.ipt), "--dport 8080") {
		t.Errorf("no hooks for port 8080:\n%s", hooks(r.ipt))
	}
	if r.clientFIN(40001) {
		t.Error("FIN accepted after the drop rule set was put in place")
	}
	got, err := r.c.Rules(ctx)
	if err != nil || got.Name != "drop-fin" {
		t.Errorf("GET rules: %+v, %v", got, err)
	}
	cs, err := r.c.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Rules) != 2 || cs.Rules[0].Rule != "drop-client-fin" || cs.Rules[0].Dropped != 1 || cs.Queue.Received != uint64(r.id) || cs.Queue.Verdicts != uint64(r.id) {
		t.Errorf("counters %+v for %d segments", cs, r.id)
	}
}

// A rule set check refuses is refused with check's problems, positioned in the body; the
// rule set in place stays, and so does the server.
func TestAPIRefusesInvalidRuleSet(t *testing.T) {
	r := newRig(t, "")
	ctx := context.Background()
	if _, err := r.c.Replace(ctx, []byte(dropFIN)); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(dropFIN, `action = "drop"`, `action = "dorp"`, 1)
	_, err := r.c.Replace(ctx, []byte(bad))
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("invalid rule set: %v, want a 400 *client.Error", err)
	}
	_, perr := config.Parse([]byte(bad), "request")
	if ae.Message != perr.Error() {
		t.Errorf("message %q, want check's %q", ae.Message, perr.Error())
	}
	if len(ae.Problems) != 1 || ae.Problems[0].Line != 8 || ae.Problems[0].Col == 0 || ae.Problems[0].Key != "rule[1].action" || ae.Problems[0].File != "request" {
		t.Errorf("problems %+v", ae.Problems)
	}
	// No scope: check's own refusal.
	_, err = r.c.Replace(ctx, []byte("[[rule]]\nname = \"x\"\naction = \"drop\"\n"))
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("rule set without a target: %v, want 400", err)
	}
	if rs, err := r.c.Rules(ctx); err != nil || rs.Name != "drop-fin" {
		t.Errorf("rule set after refusals: %+v, %v", rs, err)
	}
	if r.clientFIN(40000) {
		t.Error("FIN accepted: the rule set in place changed")
	}
}

func status(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAPIBadBodies(t *testing.T) {
	r := newRig(t, "")
	huge := bytes.Repeat([]byte("# comment\n"), DefaultMaxBody/10+1)
	req, _ := http.NewRequest(http.MethodPut, r.url+"/v1/rules", bytes.NewReader(huge))
	if code, body := status(t, req); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "limit of 1048576 bytes") {
		t.Errorf("huge body: %d %s", code, body)
	}
	for _, tc := range []struct{ ctype, body, want string }{
		{"application/json", `{"target": {"port": 80}`, "not a JSON rule set"},
		{"application/json", `[1, 2]`, "not a JSON rule set"},
		{"application/toml", "[target\nport = 1", "request:2:8: expected"},
		{"application/toml", "\x00\x01\x02", "request:1:"},
	} {
		req, _ := http.NewRequest(http.MethodPut, r.url+"/v1/rules", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.ctype)
		if code, body := status(t, req); code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s %q: %d %s, want 400 with %q", tc.ctype, tc.body, code, body, tc.want)
		}
	}
	if _, err := r.c.Rules(context.Background()); err != nil {
		t.Errorf("the server after bad bodies: %v", err)
	}
}

func TestAPIToken(t *testing.T) {
	r := newRig(t, "s3cret")
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret"} {
		req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/rules", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if code, _ := status(t, req); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, code)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, r.url+"/v1/rules", strings.NewReader(dropFIN))
	if code, _ := status(t, req); code != http.StatusUnauthorized {
		t.Errorf("PUT without a token: %d, want 401", code)
	}
	if _, err := r.c.Rules(context.Background()); err != nil {
		t.Errorf("with the token: %v", err)
	}
}

func TestAPIEnableDisablePresetReset(t *testing.T) {
	r := newRig(t, "")
	ctx := context.Background()
	if _, err := r.c.Replace(ctx, []byte(dropFIN)); err != nil {
		t.Fatal(err)
	}
	rs, err := r.c.Enable(ctx, "drop-client-fin", false)
	if err != nil || rs.Rules[0].Enabled || !rs.Rules[1].Enabled {
		t.Fatalf("disable: %+v, %v", rs, err)
	}
	if !r.clientFIN(40000) {
		t.Error("FIN dropped by a disabled rule")
	}
	if _, err := r.c.Enable(ctx, "drop-client-fin", true); err != nil {
		t.Fatal(err)
	}
	if r.clientFIN(40001) {
		t.Error("FIN accepted after the rule was enabled again")
	}
	var ae *client.Error
	if _, err := r.c.Enable(ctx, "nope", true); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(ae.Message, "drop-client-fin") {
		t.Errorf("unknown rule: %v", err)
	}

	rs, err = r.c.LoadPreset(ctx, "lost-final-ack", 8080)
	if err != nil || rs.Name != "lost-final-ack" || rs.Target.Port != 8080 || len(rs.Rules) == 0 {
		t.Fatalf("preset: %+v, %v", rs, err)
	}
	if _, err := r.c.LoadPreset(ctx, "no-such", 0); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(ae.Message, "lost-fin") {
		t.Errorf("unknown preset: %v", err)
	}

	before := hooks(r.ipt)
	rs, err = r.c.Reset(ctx)
	if err != nil || len(rs.Rules) != 0 || rs.Target.Port != 8080 {
		t.Fatalf("reset: %+v, %v", rs, err)
	}
	if !r.clientFIN(40002) {
		t.Error("FIN dropped after reset")
	}
	if h := hooks(r.ipt); h == "" || !strings.Contains(h, "--dport 8080") {
		t.Errorf("hooks after reset (the target stays):\n%s\nbefore:\n%s", h, before)
	}
}

func TestAPIJSON(t *testing.T) {
	r := newRig(t, "")
	ctx := context.Background()
	_, err := r.c.ReplaceJSON(ctx, map[string]any{
		"name":   "json",
		"target": map[string]any{"port": 8080},
		"rule":   []any{map[string]any{"name": "drop-client-fin", "side": "client", "has_flags": "FIN", "action": "drop"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.clientFIN(40000) {
		t.Error("FIN accepted under the JSON rule set")
	}
	_, err = r.c.ReplaceJSON(ctx, map[string]any{"target": map[string]any{"port": 8080},
		"rule": []any{map[string]any{"name": "x", "action": "delay", "delay": 5}}})
	var ae *client.Error
	if !errors.As(err, &ae) || len(ae.Problems) != 1 || ae.Problems[0].Key != "rule[1].delay" {
		t.Errorf("bad JSON rule set: %v %+v, want the problem at rule[1].delay", err, ae)
	}
}

func TestAPIEvents(t *testing.T) {
	r := newRig(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.c.Replace(ctx, []byte(dropFIN)); err != nil {
		t.Fatal(err)
	}
	ev, err := r.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	r.clientFIN(40000)
	var got []string
	for range 4 {
		e, err := ev.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Side+" "+e.Flags+" "+e.Verdict+" "+e.Rule)
	}
	want := "client SYN accept |server SYN|ACK accept |client ACK accept |client FIN|ACK drop drop-client-fin"
	if strings.Join(got, "|") != want {
		t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
}

// /metrics is clean for promlint (what promtool check metrics runs) and counts what the
// rules did.
func TestMetrics(t *testing.T) {
	r := newRig(t, "")
	if _, err := r.c.Replace(context.Background(), []byte(dropFIN)); err != nil {
		t.Fatal(err)
	}
	r.clientFIN(40000)
	resp, err := http.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`finproxy_rule_segments_total{outcome="dropped",rule="drop-client-fin"} 1`,
		`finproxy_rule_segments_total{outcome="matched",rule="delay-server-fin"} 0`,
		`finproxy_queue_received_total 4`,
		`finproxy_verdict_latency_seconds_count 4`,
		`finproxy_rule_set_replacements_total 1`,
		`finproxy_queue_kernel_dropped_total 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	problems, err := promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Record, on the packet path, allocates nothing when no event stream is open.
func TestRecordAllocs(t *testing.T) {
	r := newRig(t, "")
	rec := rules.Record{Time: 1, VerdictTime: 2}
	if n := testing.AllocsPerRun(1000, func() { r.srv.Record(rec) }); n != 0 {
		t.Errorf("%v allocations per record", n)
	}
}

// Event streams are bounded: one more than MaxStreams gets 503, and a stream closed
// frees its place.
func TestAPIEventStreamLimit(t *testing.T) {
	r := newRig(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var open []*client.Events
	defer func() {
		for _, e := range open {
			e.Close()
		}
	}()
	for range MaxStreams {
		ev, err := r.c.Events(ctx)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ev)
	}
	var ae *client.Error
	if _, err := r.c.Events(ctx); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("stream %d: %v, want 503", MaxStreams+1, err)
	}
	open[0].Close()
	open = open[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := r.c.Events(ctx)
		if err == nil {
			open = append(open, ev)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream closed did not free its place: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
