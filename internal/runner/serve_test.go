package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// served is a Service over a fake kernel and in-memory iptables; it reuses the hot
// path's packet builder.
type served struct {
	*hotpath
	svc *Service
	ipt *nfq.Fake

	mu       sync.Mutex
	verdicts map[uint32]bool
}

func startServe(t testing.TB, cfg *rules.Config, onRecord func(rules.Record)) *served {
	t.Helper()
	s := &served{hotpath: &hotpath{buf: make([]byte, 40+100)}, ipt: nfq.NewFake(), verdicts: map[uint32]bool{}}
	svc, err := Serve(context.Background(), ServeOptions{
		Config:   cfg,
		Logger:   slog.New(slog.DiscardHandler),
		IPT4:     s.ipt,
		OnRecord: onRecord,
		OpenQueue: func(ctx context.Context, c nfq.Config, hd nfq.Handler) (*nfq.Queue, error) {
			q, k, err := nfq.OpenFake(ctx, c, hd)
			s.k = k
			return q, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.k.OnVerdict = func(id uint32, accept bool, _ []byte) {
		s.mu.Lock()
		s.verdicts[id] = accept
		s.mu.Unlock()
	}
	s.svc = svc
	t.Cleanup(func() { svc.Close() })
	return s
}

func (s *served) verdict(t *testing.T, id uint32) bool {
	t.Helper()
	s.k.Flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.verdicts[id]
	if !ok {
		t.Fatalf("packet %d: no verdict", id)
	}
	return v
}

func parseCfg(t testing.TB, text string) *rules.Config {
	t.Helper()
	parsed, err := config.Parse([]byte(text), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return &parsed.Config
}

const dropClientFIN = `
[target]
port = 8080
address = "10.0.0.2"
[[rule]]
name = "drop-client-fin"
side = "client"
has_flags = "FIN"
action = "drop"
`

func hookLines(ipt *nfq.Fake) string {
	return strings.Join(slices.DeleteFunc(ipt.Rules(), func(s string) bool { return !strings.Contains(s, "FINPROXY") }), "\n")
}

// The hooks follow the scope of the rule set in place: none without one, the new port's
// after a replacement, none after Close; and the rules act on the next segment.
func TestServeReplace(t *testing.T) {
	s := startServe(t, nil, nil)
	if h := hookLines(s.ipt); h != "" {
		t.Fatalf("hooks without a rule set:\n%s", h)
	}
	if err := s.svc.Replace(parseCfg(t, dropClientFIN)); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); !strings.Contains(h, "--dport 8080") || !strings.Contains(h, "-d 10.0.0.2/32") {
		t.Fatalf("hooks for port 8080:\n%s", h)
	}
	cs, ss := s.handshake(40000)
	s.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0)
	if s.verdict(t, s.id) {
		t.Errorf("client FIN accepted, want dropped by the rule set just put in place")
	}
	// Same scope, other rules: the hooks stay; the connection's tracking too.
	pass := strings.Replace(dropClientFIN, `action = "drop"`, `action = "pass"`, 1)
	before := hookLines(s.ipt)
	if err := s.svc.Replace(parseCfg(t, pass)); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); h != before {
		t.Errorf("hooks changed for the same scope:\n%s\nwas:\n%s", h, before)
	}
	s.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0)
	if !s.verdict(t, s.id) {
		t.Errorf("retransmitted FIN dropped after the pass rule set replaced the drop one")
	}
	if got := s.svc.Counters(); len(got) != 1 || got[0].Matched != 2 || got[0].Dropped != 1 || got[0].Passed != 1 {
		t.Errorf("counters by name across the replacement: %+v", got)
	}
	// Another port: the hooks move.
	if err := s.svc.Replace(parseCfg(t, strings.Replace(dropClientFIN, "8080", "9090", 1))); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); !strings.Contains(h, "--dport 9090") || strings.Contains(h, "8080") {
		t.Errorf("hooks after moving to port 9090:\n%s", h)
	}
	if _, err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); h != "" {
		t.Errorf("hooks left after Close:\n%s", h)
	}
}

// A rule set on another queue is refused and changes nothing; so is one whose hooks
// cannot be installed: the old rule set and hooks are put back.
func TestServeReplaceRefused(t *testing.T) {
	s := startServe(t, parseCfg(t, dropClientFIN), nil)
	before := hookLines(s.ipt)
	other := parseCfg(t, strings.Replace(dropClientFIN, "port = 8080", "port = 8080\nqueue = 7", 1))
	if err := s.svc.Replace(other); err == nil || !strings.Contains(err.Error(), "queue 7") {
		t.Errorf("rule set on queue 7: err %v, want a refusal naming the queue", err)
	}
	s.ipt.FailOn = func(op, table, chain string, spec []string) error {
		if op == "Insert" && slices.Contains(spec, "9090") {
			return errors.New("injected failure")
		}
		return nil
	}
	if err := s.svc.Replace(parseCfg(t, strings.Replace(dropClientFIN, "8080", "9090", 1))); err == nil {
		t.Errorf("hooks that cannot be installed: no error")
	}
	s.ipt.FailOn = nil
	if h := hookLines(s.ipt); h != before {
		t.Errorf("hooks after refusals:\n%s\nwant the old ones:\n%s", h, before)
	}
	if c := s.svc.Config(); c.Target.Port != 8080 {
		t.Errorf("rule set after refusals: port %d, want the old 8080", c.Target.Port)
	}
	cs, ss := s.handshake(40000)
	s.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0)
	if s.verdict(t, s.id) {
		t.Errorf("client FIN accepted: the old rule set is not in place")
	}
}

// The serve path stays allocation-free per segment, with a record consumer.
func TestServeAllocs(t *testing.T) {
	s := startServe(t, parseCfg(t, hotpathConfig), func(rules.Record) {})
	s.k.OnVerdict = nil
	cs, ss := s.handshake(40000)
	if n := testing.AllocsPerRun(2000, func() {
		s.send(hpClient, hpServer, 40000, 8080, cs, ss, tPSH|tACK, 100)
		cs += 100
	}); n != 0 {
		t.Errorf("%v allocations per unmatched data segment", n)
	}
}

// The hooks widen when a rule set needs more segments and do not narrow again while the
// target stays (no moment without hooks when rules are switched); a new target moves
// them, with its own scope.
func TestServeHooksOnlyWiden(t *testing.T) {
	s := startServe(t, parseCfg(t, dropClientFIN), nil)
	if got := s.svc.HookScope(); got != "control" {
		t.Fatalf("hook scope %q, want control", got)
	}
	control := hookLines(s.ipt)
	all := strings.Replace(dropClientFIN, `has_flags = "FIN"`, `payload = "some"`, 1)
	var ops []string
	s.ipt.FailOn = func(op, table, chain string, spec []string) error {
		ops = append(ops, op)
		return nil
	}
	if err := s.svc.Replace(parseCfg(t, all)); err != nil {
		t.Fatal(err)
	}
	s.ipt.FailOn = nil
	// Widening leaves no gap: the new jumps are in before anything is taken out.
	firstInsert, firstRemoval := slices.Index(ops, "Insert"), slices.IndexFunc(ops, func(op string) bool {
		return op == "ClearChain" || op == "DeleteIfExists" || op == "ClearAndDeleteChain"
	})
	if firstInsert < 0 || firstRemoval < 0 || firstInsert > firstRemoval {
		t.Errorf("widening: iptables calls %v: want the new jumps inserted before the old hooks are removed", ops)
	}
	wide := hookLines(s.ipt)
	if s.svc.HookScope() != "all" || wide == control {
		t.Fatalf("hooks for a rule on data segments: %s\n%s", s.svc.HookScope(), wide)
	}
	calls := 0
	s.ipt.FailOn = func(op, table, chain string, spec []string) error {
		if op != "ChainExists" && op != "List" && op != "ListChains" && op != "Exists" {
			calls++
		}
		return nil
	}
	if err := s.svc.Replace(parseCfg(t, dropClientFIN)); err != nil {
		t.Fatal(err)
	}
	if calls != 0 || hookLines(s.ipt) != wide || s.svc.HookScope() != "all" {
		t.Errorf("back to a FIN rule: %d iptables changes, scope %s, hooks:\n%s", calls, s.svc.HookScope(), hookLines(s.ipt))
	}
	s.ipt.FailOn = nil
	if err := s.svc.Replace(parseCfg(t, strings.Replace(dropClientFIN, "8080", "9090", 1))); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); s.svc.HookScope() != "control" || h != strings.ReplaceAll(control, "8080", "9090") {
		t.Errorf("hooks for port 9090: %s\n%s\nwant\n%s", s.svc.HookScope(), h, strings.ReplaceAll(control, "8080", "9090"))
	}
	if _, err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); h != "" {
		t.Errorf("hooks left after Close:\n%s", h)
	}
}

// The counters keep at most MaxCountedRules names (bounded metric series), the rest added
// up under EarlierRules: nothing counted is lost.
func TestServeCountersBounded(t *testing.T) {
	s := startServe(t, nil, nil)
	const sets = MaxCountedRules + 50
	for i := range sets {
		cfg := parseCfg(t, fmt.Sprintf("[target]\nport = 8080\n[[rule]]\nname = \"syn-%d\"\nhas_flags = \"SYN\"\naction = \"pass\"\n", i))
		if err := s.svc.Replace(cfg); err != nil {
			t.Fatal(err)
		}
		s.send(hpClient, hpServer, uint16(20000+i), 8080, 1000, 0, tSYN, 0)
	}
	got := s.svc.Counters()
	var matched uint64
	for _, c := range got {
		matched += c.Matched
	}
	if len(got) > MaxCountedRules+1 || got[0].Rule != EarlierRules || got[len(got)-1].Rule != fmt.Sprintf("syn-%d", sets-1) || matched != sets {
		t.Errorf("%d counters (first %+v, last %+v), %d matched in all; want at most %d names, %s first, the current rule last, %d matched",
			len(got), got[0], got[len(got)-1], matched, MaxCountedRules+1, EarlierRules, sets)
	}
}

// The hooks name this process (so that cleanup spares them while it lives and the
// watchdog removes them when it dies), and a rule set that needs the handshake widens
// hooks that kept SYNs out, without narrowing them back afterwards.
func TestServeHooksOwnerAndHandshake(t *testing.T) {
	s := startServe(t, parseCfg(t, dropClientFIN), nil)
	self, err := nfq.Self()
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("finproxy pid=%d start=%d", self.PID, self.Start)
	noSYN := hookLines(s.ipt)
	if !strings.Contains(noSYN, tag) || strings.Contains(noSYN, "SYN SYN -j NFQUEUE") {
		t.Fatalf("hooks for a FIN rule: want them tagged %q and without SYN:\n%s", tag, noSYN)
	}
	syn := strings.Replace(dropClientFIN, `has_flags = "FIN"`, `has_flags = "SYN"`, 1)
	if err := s.svc.Replace(parseCfg(t, syn)); err != nil {
		t.Fatal(err)
	}
	withSYN := hookLines(s.ipt)
	if !strings.Contains(withSYN, "SYN") || withSYN == noSYN {
		t.Fatalf("hooks for a SYN rule:\n%s", withSYN)
	}
	if err := s.svc.Replace(parseCfg(t, dropClientFIN)); err != nil {
		t.Fatal(err)
	}
	if h := hookLines(s.ipt); h != withSYN {
		t.Errorf("back to a FIN rule, the hooks narrowed:\n%s\nwant\n%s", h, withSYN)
	}
}

// Redirections come after the hooks and go before them; those that stay are left alone;
// the hooks then take the redirected segments toward the server in POSTROUTING; a rule
// with server_port acts on its server's connections only; Close removes everything.
func TestServeRedirected(t *testing.T) {
	s := startServe(t, nil, nil)
	var order []string
	s.ipt.FailOn = func(op, table, chain string, spec []string) error {
		if op == "Insert" || op == "DeleteIfExists" {
			order = append(order, op+" "+table)
		}
		return nil
	}
	two := strings.Replace(dropClientFIN, "port = 8080", "port = [8080, 9090]", 1) + "server_port = 9090\n"
	r1 := nfq.Redirect{Listen: netip.MustParseAddrPort("10.0.0.2:18080"), Upstream: netip.MustParseAddrPort("10.0.0.2:8080")}
	r2 := nfq.Redirect{Listen: netip.MustParseAddrPort("10.0.0.2:19090"), Upstream: netip.MustParseAddrPort("10.0.0.2:9090")}
	if err := s.svc.ReplaceRedirected(parseCfg(t, two), []nfq.Redirect{r1, r2}); err != nil {
		t.Fatal(err)
	}
	if i, j := slices.Index(order, "Insert mangle"), slices.Index(order, "Insert nat"); i < 0 || j < i {
		t.Errorf("iptables calls %q: want the hooks (mangle) before the redirections (nat)", order)
	}
	h := strings.Join(s.svc.Hooks(), "\n")
	for _, want := range []string{"--dports 8080,9090", "-A POSTROUTING -d 10.0.0.2/32 -p tcp -m conntrack --ctstate DNAT",
		"nat -A OUTPUT -d 10.0.0.2/32 -p tcp -m tcp --dport 18080", "--to-destination 10.0.0.2:9090"} {
		if !strings.Contains(h, want) {
			t.Errorf("hooks lack %q:\n%s", want, h)
		}
	}
	cs, ss := s.handshake(40000)
	s.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0)
	if !s.verdict(t, s.id) {
		t.Errorf("client FIN to 8080 dropped by a rule of server_port 9090")
	}
	// One redirection goes: its rules go first, the other's stay as they were.
	order = nil
	if err := s.svc.ReplaceRedirected(parseCfg(t, two), []nfq.Redirect{r1}); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "DeleteIfExists nat" {
		t.Errorf("iptables calls %q: want the 2 nat rules of the redirection that went deleted, nothing else", order)
	}
	if h := strings.Join(s.svc.Hooks(), "\n"); strings.Contains(h, "19090") || !strings.Contains(h, "18080") {
		t.Errorf("hooks after removing the redirection of 19090:\n%s", h)
	}
	s.ipt.FailOn = nil
	if _, err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if r := s.ipt.Rules(); len(r) != 0 {
		t.Errorf("left after Close: %q", r)
	}
}

// A redirection that cannot be installed leaves the old rule set and redirections in
// place, and nothing of the new ones.
func TestServeRedirectedRefused(t *testing.T) {
	s := startServe(t, parseCfg(t, dropClientFIN), nil)
	before := s.ipt.Rules()
	r1 := nfq.Redirect{Listen: netip.MustParseAddrPort("10.0.0.2:18080"), Upstream: netip.MustParseAddrPort("10.0.0.2:8080")}
	r2 := nfq.Redirect{Listen: netip.MustParseAddrPort("10.0.0.2:19090"), Upstream: netip.MustParseAddrPort("10.0.0.2:9090")}
	s.ipt.FailOn = func(op, table, chain string, spec []string) error {
		if op == "Insert" && table == "nat" && slices.Contains(spec, "19090") {
			return errors.New("boom")
		}
		return nil
	}
	two := strings.Replace(dropClientFIN, "port = 8080", "port = [8080, 9090]", 1)
	if err := s.svc.ReplaceRedirected(parseCfg(t, two), []nfq.Redirect{r1, r2}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("ReplaceRedirected with a failing DNAT insert: %v", err)
	}
	if d := strings.Join(s.ipt.Rules(), "\n"); d != strings.Join(before, "\n") {
		t.Errorf("rules after the refusal:\n%s\nwant as before:\n%s", d, strings.Join(before, "\n"))
	}
	if c := s.svc.Config(); len(c.Target.Ports) != 0 || len(s.svc.Redirects()) != 0 {
		t.Errorf("after the refusal: ports %v, redirects %v; want the old rule set, none", c.Target.Ports, s.svc.Redirects())
	}
}
