package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// ServeOptions configure a Service (finproxy serve).
type ServeOptions struct {
	// Queue is the NFQUEUE number the service reads, for its whole life (0:
	// rules.DefaultQueue). A rule set naming another queue is refused.
	Queue uint16
	// Config is the first rule set (nil: none, and no hooks until one with a scope).
	Config *rules.Config
	Logger *slog.Logger
	// IPT4 and IPT6 replace the real iptables/ip6tables (tests). Nil: the real ones.
	IPT4, IPT6 nfq.IPTables
	// OpenQueue replaces nfq.Open (tests: nfq.OpenFake). Nil: nfq.Open.
	OpenQueue func(ctx context.Context, cfg nfq.Config, h nfq.Handler) (*nfq.Queue, error)
	// OnRecord, when set, sees every segment's record, with the engine's lock held (in
	// verdict order): it must not block and must not call the Service.
	OnRecord func(rules.Record)
	// Observe, when set, runs an Observer for the Service's life, as run does: every
	// segment's record goes on its connection's timeline. ObservePorts filter it in the
	// kernel (none: every TCP socket; the rule sets' targets change, the Observer stays).
	Observe      *ObserveOptions
	ObservePorts []uint16
}

// Service is finproxy with a rule set that can be replaced while segments flow: the
// queue stays bound from Serve to Close, the engine (and what it tracks of the
// connections) stays, and the hooks follow the scope of the current rule set.
type Service struct {
	log     *slog.Logger
	stopMem func() // ends GovernMemory
	queue   uint16
	owner   nfq.Owner
	q       *nfq.Queue
	eng     *rules.Engine
	sink    *serveSink
	undec   atomic.Uint64
	obs     *observation // nil without ServeOptions.Observe

	mu          sync.Mutex // serialises Replace, Close and the reads of what they change
	cfg         *rules.Config
	ipt4, ipt6  nfq.IPTables
	hooks       *nfq.Hooks
	spec        nfq.HookSpec
	stale       []*nfq.Hooks                    // replaced hooks whose removal failed, tried again at Close
	redirects   map[nfq.Redirect]*nfq.Redirects // DNAT rules in place, by redirection
	redirecting bool                            // the current rule set comes with redirections
	retired     map[string]rules.Counters       // counters of rules replaced, by name
	order       []string                        // every rule name seen, in the order first seen
	replaced    uint64
	closed      bool
	started     time.Time
}

// serveSink is the engine's Sink: verdicts to the queue, injections to raw sockets
// opened when a rule set first needs them.
type serveSink struct {
	q   *nfq.Queue
	inj atomic.Pointer[injector]
}

func (s *serveSink) Verdict(id uint32, v rules.Verdict) error {
	if v == rules.Drop {
		return s.q.Drop(id)
	}
	return s.q.Accept(id)
}

func (s *serveSink) AcceptModified(id uint32, data []byte) error {
	return s.q.AcceptModified(id, data)
}

func (s *serveSink) Inject(data []byte) error {
	in := s.inj.Load()
	if in == nil {
		return errors.New("no raw socket: no rule set so far injects")
	}
	return in.send(data)
}

// Serve binds the queue, starts the engine with o.Config and installs its hooks. The
// Service runs until Close, which must be called on every path (it tears down as Run
// does: verdicts for everything held, then the hooks, then the queue).
func Serve(ctx context.Context, o ServeOptions) (*Service, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{log: log, queue: o.Queue, ipt4: o.IPT4, ipt6: o.IPT6,
		retired: map[string]rules.Counters{}, started: time.Now(), cfg: &rules.Config{}}
	// The hooks name this process, so that cleanup spares them while it lives and a
	// watchdog removes exactly them when it dies.
	var err error
	if s.owner, err = nfq.Self(); err != nil {
		return nil, err
	}
	if s.queue == 0 {
		s.queue = rules.DefaultQueue
	}
	if o.Config != nil {
		if err := s.checkQueue(o.Config); err != nil {
			return nil, err
		}
	}
	if s.ipt4 == nil && s.ipt6 == nil {
		if s.ipt4, err = nfq.NewIPTables(false); err != nil {
			return nil, err
		}
		if s.ipt6, err = nfq.NewIPTables(true); err != nil {
			log.Warn("IPv6 segments will not be hooked", "err", err)
			s.ipt6 = nil
		}
	}
	s.sink = &serveSink{}
	eopts := rules.Options{Sink: s.sink, Logger: log, Log: o.OnRecord}
	if o.Observe != nil {
		var f rules.Config
		if len(o.ObservePorts) > 0 {
			f.Target.Port, f.Target.Ports = o.ObservePorts[0], o.ObservePorts[1:]
		}
		s.obs = startObservation(ctx, &f, o.Observe, log)
		onRecord := o.OnRecord
		eopts.Log = func(r rules.Record) {
			s.obs.annotate(r)
			if onRecord != nil {
				onRecord(r)
			}
		}
	}
	s.eng = rules.NewEngine(nil, eopts)
	dec := segment.NewDecoder()
	handler := func(p nfq.Packet) {
		var seg segment.Segment
		if derr := dec.Decode(p.Data, &seg); derr != nil {
			s.undec.Add(1)
			_ = s.sink.Verdict(p.ID, rules.Accept)
			return
		}
		s.eng.Handle(rules.Packet{ID: p.ID, Time: p.Time, Seg: seg, Data: p.Data})
	}
	// The queue outlives ctx: Close drains it after the hooks are gone.
	openQueue := o.OpenQueue
	if openQueue == nil {
		openQueue = nfq.Open
	}
	q, err := openQueue(context.WithoutCancel(ctx), nfq.Config{Num: s.queue, Logger: log}, handler)
	if err != nil {
		s.eng.Close()
		if s.obs != nil {
			s.obs.finish(log)
		}
		return nil, err
	}
	s.q, s.sink.q = q, q
	s.stopMem = GovernMemory(time.Second)
	if o.Config != nil {
		if err := s.Replace(o.Config); err != nil {
			_, cerr := s.Close()
			return nil, errors.Join(err, cerr)
		}
	}
	return s, nil
}

// Observer is the Observer the service runs (nil without ServeOptions.Observe, or when
// no source of it started: ObserveWarnings says why).
func (s *Service) Observer() *observe.Observer {
	if s.obs == nil {
		return nil
	}
	return s.obs.o
}

// ObserveWarnings are the reasons observation is off or incomplete.
func (s *Service) ObserveWarnings() []string {
	if s.obs == nil {
		return nil
	}
	if s.obs.o == nil {
		return s.obs.warns
	}
	return s.obs.o.Warnings()
}

// Redirects lists the redirections in place (ReplaceRedirected), in no particular order.
func (s *Service) Redirects() []nfq.Redirect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.redirects))
}

// Queue is the NFQUEUE number the service reads.
func (s *Service) Queue() uint16 { return s.queue }

func (s *Service) checkQueue(cfg *rules.Config) error {
	if cfg.Target.Queue != 0 && cfg.Target.Queue != s.queue {
		return fmt.Errorf("%s: target.queue %d: this finproxy serve reads queue %d for its whole life; leave target.queue out, or restart serve with --queue %d",
			cfg.File, cfg.Target.Queue, s.queue, cfg.Target.Queue)
	}
	return nil
}

// hasScope reports whether cfg names connections to hook.
func hasScope(cfg *rules.Config) bool {
	return cfg.Target.Port != 0 || len(cfg.Target.Addresses) > 0
}

func (s *Service) specOf(cfg *rules.Config) nfq.HookSpec {
	c := *cfg
	c.Target.Queue = s.queue
	spec := HookSpec(&c)
	spec.Logger = s.log
	spec.Owner = s.owner
	spec.Redirected = s.redirecting && spec.Mode == nfq.Local
	return spec
}

// sameTarget reports whether a and b hook the same connections the same way (their
// scopes, the segments queued, may differ).
func sameTarget(a, b nfq.HookSpec) bool {
	return a.Mode == b.Mode && a.Queue == b.Queue && a.Queues == b.Queues && a.Port == b.Port &&
		slices.Equal(a.Ports, b.Ports) && a.Redirected == b.Redirected &&
		slices.Equal(a.Addrs, b.Addrs) && a.Bypass == b.Bypass &&
		a.SkipMark == b.SkipMark && a.ConnMark == b.ConnMark
}

// otherChain names the chain the hooks in place do not use: FINPROXY-Q<n> and
// FINPROXY-Q<n>-B take turns.
func (s *Service) otherChain() string {
	if s.spec.Chain == "" {
		return nfq.ChainName(s.queue) + "-B"
	}
	return ""
}

// Replace puts cfg (already validated: config.Parse) in place of the current rule set,
// for the next segment queued (see rules.Engine.Replace for what carries over).
//
// The hooks change only when they must. On the same target (port, addresses, hook
// mode) they never narrow while the service runs, and widen (control < from-fin < all)
// without a gap: the new hooks are installed before the old ones are removed. A new
// target moves them: the old hooks are removed before the rules change and the new ones
// installed after, and in between (measured: 0.4 to 0.7 s of iptables calls on a loaded
// 2-core VM) segments pass unqueued and unseen. If the new hooks cannot be installed,
// the old rule set and hooks are put back and the error returned.
func (s *Service) Replace(cfg *rules.Config) error {
	if err := s.checkQueue(cfg); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("finproxy is stopping")
	}
	return s.replace(cfg)
}

// ReplaceRedirected puts cfg in place as Replace does, and the redirections rd (nfq.Redirect:
// DNAT, in the kernel, from a listen address to a server of cfg's target) in place of the
// current ones: those that go are removed before the rules change (no new connection is
// sent to a server whose hooks are about to change), those that come are added after the
// hooks are in place (the first redirected segment is seen); those that stay are not
// touched. The DNAT rules carry the service's owner as the hooks do: Close, `finproxy
// cleanup` and the watchdog remove them.
func (s *Service) ReplaceRedirected(cfg *rules.Config, rd []nfq.Redirect) error {
	if err := s.checkQueue(cfg); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("finproxy is stopping")
	}
	for r, h := range s.redirects {
		if slices.Contains(rd, r) {
			continue
		}
		if err := h.Remove(); err != nil {
			return fmt.Errorf("remove the redirection %v (run `finproxy cleanup`): %w", r, err)
		}
		delete(s.redirects, r)
	}
	if s.redirects == nil {
		s.redirects = map[nfq.Redirect]*nfq.Redirects{}
	}
	var add []nfq.Redirect
	for _, r := range rd {
		if s.redirects[r] == nil && !slices.Contains(add, r) {
			add = append(add, r)
		}
	}
	// The hooks take the redirected segments where they carry the server's address
	// (nfq.HookSpec.Redirected) before the first redirection is in place.
	was, old := s.redirecting, s.cfg
	s.redirecting = len(rd) > 0
	if err := s.replace(cfg); err != nil {
		s.redirecting = was
		return err
	}
	for i, r := range add {
		h, err := nfq.InstallRedirects(s.ipt4, s.ipt6, s.owner, []nfq.Redirect{r})
		if err == nil {
			s.redirects[r] = h
			s.log.Info("redirection installed", "listen", r.Listen, "upstream", r.Upstream)
			continue
		}
		// The old rule set back, without the redirections this call added (those it
		// removed stay removed: their proxies' rules are gone from the old set's view).
		err = fmt.Errorf("redirect %v: %w", r, err)
		for _, a := range add[:i] {
			if rerr := s.redirects[a].Remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove the redirection %v (run `finproxy cleanup`): %w", a, rerr))
				continue
			}
			delete(s.redirects, a)
		}
		s.redirecting = was && len(s.redirects) > 0
		if rerr := s.replace(old); rerr != nil {
			err = errors.Join(err, fmt.Errorf("putting the old rule set back: %w", rerr))
		}
		return err
	}
	return nil
}

func (s *Service) replace(cfg *rules.Config) error {
	if cfg.Injects() && s.sink.inj.Load() == nil {
		in, err := openInjector(DefaultInjectMark, s.ipt4 != nil, s.ipt6 != nil)
		if err != nil {
			return fmt.Errorf("%s: the rule set injects segments: %w", cfg.File, err)
		}
		s.sink.inj.Store(in)
	}
	spec := s.specOf(cfg)
	if s.hooks != nil && hasScope(cfg) && sameTarget(spec, s.spec) {
		// The hooks never narrow what they queue while the service runs (a rule set that
		// needs fewer segments sees more, and ignores them), so that switching rules on
		// and off leaves them alone.
		if spec.Scope <= s.spec.Scope && (spec.NoHandshake || !s.spec.NoHandshake) {
			s.swap(cfg)
			return nil
		}
		// They widen without a moment when segments pass unqueued: the wider hooks go in
		// first, in the other chain (a segment is queued by the first jump it meets, never
		// twice), then the rules change, then the old hooks go.
		spec.Scope = max(spec.Scope, s.spec.Scope)
		spec.NoHandshake = spec.NoHandshake && s.spec.NoHandshake
		spec.Chain = s.otherChain()
		old := s.hooks
		if err := s.installHooks(spec); err != nil {
			return err
		}
		s.swap(cfg)
		if err := old.Remove(); err != nil {
			s.log.Warn("the previous hooks could not all be removed; trying again at exit", "err", err)
			s.stale = append(s.stale, old)
		}
		return nil
	}
	old, oldSpec, hooked := s.cfg, s.spec, s.hooks != nil
	if err := s.removeHooks(); err != nil {
		return err // the old rules stay, with what is left of their hooks
	}
	s.swap(cfg)
	if !hasScope(cfg) {
		return nil
	}
	err := s.installHooks(spec)
	if err == nil {
		return nil
	}
	s.swap(old)
	if hooked {
		if rerr := s.installHooks(oldSpec); rerr != nil {
			err = errors.Join(err, fmt.Errorf("putting the old hooks back: %w", rerr))
		}
	}
	return err
}

func (s *Service) swap(cfg *rules.Config) {
	for _, c := range s.eng.Replace(cfg) {
		t := s.retired[c.Rule]
		addCounters(&t, c)
		s.retired[c.Rule] = t
	}
	for _, r := range cfg.Rules {
		if _, ok := s.retired[r.Name]; !ok {
			s.retired[r.Name] = rules.Counters{Rule: r.Name}
			s.order = append(s.order, r.Name)
		}
	}
	s.foldRetired(cfg)
	s.cfg = cfg
	s.replaced++
}

// MaxCountedRules bounds the rule names counted one by one (and so the series of the
// per-rule metrics): past it, the counters of the oldest names not in the current rule
// set are added up under EarlierRules.
const MaxCountedRules = 256

// EarlierRules names the counters of rules folded together (MaxCountedRules).
const EarlierRules = "(earlier rules)"

// foldRetired keeps at most MaxCountedRules names (plus EarlierRules), folding the oldest
// ones not in cfg.
func (s *Service) foldRetired(cfg *rules.Config) {
	current := map[string]bool{}
	for _, r := range cfg.Rules {
		current[r.Name] = true
	}
	for len(s.order) > MaxCountedRules {
		i := slices.IndexFunc(s.order, func(n string) bool { return n != EarlierRules && !current[n] })
		if i < 0 {
			return
		}
		name := s.order[i]
		o, ok := s.retired[EarlierRules]
		addCounters(&o, s.retired[name])
		o.Rule = EarlierRules
		s.retired[EarlierRules] = o
		delete(s.retired, name)
		s.order = slices.Delete(s.order, i, i+1)
		if !ok {
			s.order = slices.Insert(s.order, 0, EarlierRules)
		}
	}
}

func addCounters(t *rules.Counters, c rules.Counters) {
	t.Rule = c.Rule
	t.Matched += c.Matched
	t.Passed += c.Passed
	t.Dropped += c.Dropped
	t.Delayed += c.Delayed
	t.Held += c.Held
	t.Merged += c.Merged
	t.Modified += c.Modified
	t.Injected += c.Injected
	t.Panicked += c.Panicked
}

func (s *Service) installHooks(spec nfq.HookSpec) error {
	h, err := nfq.Install(s.ipt4, s.ipt6, spec)
	if err != nil {
		return fmt.Errorf("install iptables hooks: %w", err)
	}
	s.hooks, s.spec = h, spec
	s.log.Info("hooks installed", "queue", spec.Queue, "hook", spec.Mode.String(), "port", spec.Port, "ports", spec.Ports,
		"addresses", spec.Addrs, "queued", spec.Scope.String())
	return nil
}

func (s *Service) removeHooks() error {
	if s.hooks == nil {
		return nil
	}
	if err := s.hooks.Remove(); err != nil {
		return fmt.Errorf("remove iptables hooks (run `finproxy cleanup`): %w", err)
	}
	s.hooks = nil
	return nil
}

// Config returns the current rule set (never nil; no rules and no scope at first).
func (s *Service) Config() *rules.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Replacements counts the rule sets put in place so far.
func (s *Service) Replacements() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replaced
}

// HookScope says which segments the hooks in place queue ("" without hooks).
func (s *Service) HookScope() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hooks == nil {
		return ""
	}
	return s.spec.Scope.String()
}

// Hooks lists the iptables rules in place, as nfq.Hooks.Rules does (none without a
// scope), then the redirections' (nfq.Redirects.Rules).
func (s *Service) Hooks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if s.hooks != nil {
		out = s.hooks.Rules()
	}
	for _, r := range slices.SortedFunc(maps.Keys(s.redirects), func(a, b nfq.Redirect) int { return strings.Compare(a.String(), b.String()) }) {
		out = append(out, s.redirects[r].Rules()...)
	}
	return out
}

// Counters returns what each rule did since the service started, by rule name (a rule
// replaced by one of the same name goes on counting), every name ever loaded, in the
// order first loaded.
func (s *Service) Counters() []rules.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters()
}

func (s *Service) counters() []rules.Counters {
	cur := map[string]rules.Counters{}
	for _, c := range s.eng.Counters() {
		cur[c.Rule] = c
	}
	out := make([]rules.Counters, 0, len(s.order))
	for _, name := range s.order {
		t := s.retired[name]
		addCounters(&t, cur[name])
		t.Rule = name
		out = append(out, t)
	}
	return out
}

// QueueStats returns the queue loop's counters so far.
func (s *Service) QueueStats() nfq.Stats { return s.q.Stats() }

// KernelStats returns the kernel's view of the queue.
func (s *Service) KernelStats() (nfq.KernelQueueStats, error) { return s.q.KernelStats() }

// Undecodable counts queued packets that were not TCP segments (accepted).
func (s *Service) Undecodable() uint64 { return s.undec.Load() }

// Close tears down as Run does: verdicts for everything held, then the hooks, then the
// queue (drained first). It returns the service's totals. Later calls return nil.
func (s *Service) Close() (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil
	}
	s.closed = true
	if s.stopMem != nil {
		defer s.stopMem()
	}
	res := &Result{Started: s.started}
	s.eng.Close()
	res.Counters = s.counters()
	var err error
	for r, h := range s.redirects {
		if rerr := h.Remove(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the redirection %v (run `finproxy cleanup`): %w", r, rerr))
		}
	}
	err = errors.Join(err, s.removeHooks())
	for _, h := range s.stale {
		if rerr := h.Remove(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove iptables hooks (run `finproxy cleanup`): %w", rerr))
		}
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ks, kerr := s.q.KernelStats()
		if kerr != nil || ks.Waiting == 0 {
			break
		}
	}
	s.q.Flush()
	if ks, kerr := s.q.KernelStats(); kerr == nil {
		res.Kernel = &ks
	}
	res.Queue = s.q.Stats()
	if cerr := s.q.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close queue: %w", cerr))
	}
	if in := s.sink.inj.Load(); in != nil {
		in.close()
	}
	res.Undecodable = s.undec.Load()
	if s.obs != nil {
		res.Observed = true
		res.Observation, res.ObserveWarnings = s.obs.finish(s.log)
	}
	res.Ended = time.Now()
	return res, err
}
