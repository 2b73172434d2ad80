package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// Options configure one run.
type Options struct {
	Config *rules.Config
	// LogPath, when set, receives the event log: one JSON object per queued segment.
	LogPath string
	// Duration stops the run by itself when > 0.
	Duration time.Duration
	Logger   *slog.Logger
	// Ready is called once the hooks are installed and segments flow through finproxy.
	Ready func()
	// IPT4 and IPT6 replace the real iptables/ip6tables (tests). Nil: the real ones.
	IPT4, IPT6 nfq.IPTables
	// OnRecord, when set, sees every event log record (after it is written). The verdict
	// has been given then, not necessarily written: OnVerdictWritten says when it was.
	OnRecord func(rules.Record)
	// OnVerdictWritten, when set, is called with a packet's queue id (Record.ID) once its
	// verdict has been written to the kernel (nfq.Config.OnWritten).
	OnVerdictWritten func(id uint32)
	// OpenQueue replaces nfq.Open (tests and benchmarks: nfq.OpenFake). Nil: nfq.Open.
	OpenQueue func(ctx context.Context, cfg nfq.Config, h nfq.Handler) (*nfq.Queue, error)
	// PcapPath, when set, receives a pcapng capture of every queued segment (see pcap.go).
	PcapPath string
	// Observe, when not nil, follows the target's connections on both ends with an
	// observe.Observer started before the hooks (tracepoints and sock_diag, filtered by the
	// target's port and addresses) and puts every segment record on the timeline of its
	// connection (observe.Note with its Record), on the Observer's clock. Observation
	// never fails a run: what did not work is in Result.ObserveWarnings.
	Observe *ObserveOptions
	// Stack lets the run hook a scope that a live run hooks already in this network
	// namespace (refused otherwise, with an *nfq.ConflictError naming that run).
	Stack bool
}

// Result is what a finished run reports.
type Result struct {
	Counters []rules.Counters `json:"counters"`
	// Queue counts what the queue loop saw (ENOBUFS, verdicts for vanished ids, ...).
	Queue nfq.Stats `json:"queue"`
	// Kernel is the kernel's view of the queue at the end (drops when it was full).
	Kernel *nfq.KernelQueueStats `json:"kernel,omitempty"`
	// Undecodable counts queued packets the decoder could not read as a whole TCP segment:
	// the rules never saw them. Unclassified says why and what they got.
	Undecodable  uint64       `json:"undecodable"`
	Unclassified Unclassified `json:"unclassified"`
	// Records is the number of event log lines written (whole, in the file); RecordsLost
	// the records that are not, after a write error (a full disk: Run's error says which).
	Records     uint64 `json:"records"`
	RecordsLost uint64 `json:"records_lost,omitempty"`
	// PcapPackets is the number of packets written to the capture (Options.PcapPath);
	// PcapLost those that are not, after a write error.
	PcapPackets uint64 `json:"pcap_packets,omitempty"`
	PcapLost    uint64 `json:"pcap_lost,omitempty"`
	// Started is when the run began, Ended when its teardown was complete.
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	// Observed is set when Options.Observe was; Observation is then what the Observer saw
	// by the end of the teardown (nil when no source could start), ObserveWarnings what
	// did not work.
	Observed        bool            `json:"observed"`
	Observation     *observe.Report `json:"observation,omitempty"`
	ObserveWarnings []string        `json:"observe_warnings,omitempty"`
}

// Unclassified counts the queued packets the rules could not see, by reason (the errors
// of segment.Decoder), and names the verdict they got (the config's target.unclassified).
type Unclassified struct {
	Fragments uint64             `json:"fragments"`
	Malformed uint64             `json:"malformed"`
	NotTCP    uint64             `json:"not_tcp"`
	Verdict   rules.Unclassified `json:"verdict"`
}

// unclassified counts them during a run and warns at once about the first of each kind.
type unclassified struct {
	fragments, malformed, notTCP atomic.Uint64
	verdict                      rules.Verdict
	name                         rules.Unclassified
}

func newUnclassified(u rules.Unclassified) *unclassified {
	if u == "" {
		u = rules.UnclassifiedDrop
	}
	c := &unclassified{verdict: rules.Drop, name: u}
	if u == rules.UnclassifiedAccept {
		c.verdict = rules.Accept
	}
	return c
}

// count records a packet the decoder refused with err and returns its verdict.
func (c *unclassified) count(err error, log *slog.Logger) rules.Verdict {
	n := &c.malformed
	switch {
	case errors.Is(err, segment.ErrFragment):
		n = &c.fragments
	case errors.Is(err, segment.ErrNotTCP):
		n = &c.notTCP
	}
	if n.Add(1) == 1 {
		log.Warn("a queued packet is no TCP segment finproxy can read: the rules cannot see it (counted in the summary)",
			"reason", err, "verdict", string(c.name), "set by", "target.unclassified")
	}
	return c.verdict
}

func (c *unclassified) result() Unclassified {
	return Unclassified{Fragments: c.fragments.Load(), Malformed: c.malformed.Load(), NotTCP: c.notTCP.Load(), Verdict: c.name}
}

// Total is the number of unclassified packets.
func (u Unclassified) Total() uint64 { return u.Fragments + u.Malformed + u.NotTCP }

// sink hands the engine's verdicts to the queue once it is open, rewritten segments with
// them, and injected segments to the raw sockets (inject.go).
type sink struct {
	ready chan struct{}
	q     *nfq.Queue
	inj   *injector // nil when no action injects
}

func (s *sink) Verdict(id uint32, v rules.Verdict) error {
	<-s.ready
	if v == rules.Drop {
		return s.q.Drop(id)
	}
	return s.q.Accept(id)
}

func (s *sink) AcceptModified(id uint32, data []byte) error {
	<-s.ready
	return s.q.AcceptModified(id, data)
}

func (s *sink) Inject(data []byte) error {
	if s.inj == nil {
		return errors.New("no raw socket: no action of the config injects")
	}
	return s.inj.send(data)
}

// eventLog writes records as JSON lines. n counts the records given to it; cnt.whole the
// lines that reached the file.
type eventLog struct {
	mu   sync.Mutex
	f    io.Closer
	w    *bufio.Writer
	cnt  *wholeCounter
	enc  *json.Encoder
	n    atomic.Uint64
	err  error
	log  *slog.Logger
	path string

	stop, done chan struct{}
}

func openLog(path string, log *slog.Logger) (*eventLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return newEventLog(f, path, log), nil
}

// newEventLog writes the event log to f (named path in messages).
func newEventLog(f io.WriteCloser, path string, log *slog.Logger) *eventLog {
	cnt := &wholeCounter{w: f}
	w := bufio.NewWriterSize(cnt, 64<<10)
	l := &eventLog{f: f, w: w, cnt: cnt, enc: json.NewEncoder(&unitWriter{buf: w, c: cnt, unit: true}),
		log: log, path: path, stop: make(chan struct{}), done: make(chan struct{})}
	// Flush a few times a second, so that a reader following the file (the lab, tail -f)
	// sees segments promptly without a write per segment on the hot path.
	go func() {
		defer close(l.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.mu.Lock()
				if l.err == nil {
					l.fail(l.w.Flush())
				}
				l.mu.Unlock()
			}
		}
	}()
	return l
}

// fail records the first write error and reports it at once; l.mu is held.
func (l *eventLog) fail(err error) {
	if err == nil || l.err != nil {
		return
	}
	l.err = err
	outputFailure(l.log, "event log", l.path, err, l.cnt.whole)
}

func (l *eventLog) write(r rules.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.fail(l.enc.Encode(r))
	}
	l.n.Add(1)
}

// close flushes and closes the file; it returns the lines written whole and those given
// that are not in the file.
func (l *eventLog) close() (written, lost uint64, err error) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.fail(l.w.Flush())
	}
	err = errors.Join(l.err, l.f.Close())
	written = l.cnt.whole
	lost = l.n.Load() - written
	if err != nil {
		return written, lost, fmt.Errorf("event log %s: %d of %d lines written: %w", l.path, written, l.n.Load(), err)
	}
	return written, lost, nil
}

// HookSpec translates a config's target into the hook specification.
func HookSpec(cfg *rules.Config) nfq.HookSpec {
	spec := nfq.HookSpec{
		Queue:  cfg.Target.Queue,
		Port:   cfg.Target.Port,
		Ports:  cfg.Target.Ports,
		Addrs:  cfg.Target.Addresses,
		Bypass: true,
		// Segments finproxy injects are never queued again.
		SkipMark: DefaultInjectMark,
	}
	if spec.Queue == 0 {
		spec.Queue = rules.DefaultQueue
	}
	if cfg.Target.Hook == rules.HookForward {
		spec.Mode = nfq.Forward
	} else {
		spec.Mode = nfq.Local
	}
	need, _ := cfg.HandshakeNeed()
	spec.NoHandshake = !need
	switch cfg.QueueScope() {
	case rules.QueueAll:
		spec.Scope = nfq.All
	case rules.QueueFromFIN:
		spec.Scope = nfq.FromFIN
	default:
		spec.Scope = nfq.Control
	}
	return spec
}

// families reports which IP families the target needs.
func families(addrs []netip.Prefix) (v4, v6 bool) {
	if len(addrs) == 0 {
		return true, true
	}
	for _, a := range addrs {
		if a.Addr().Is4() || a.Addr().Is4In6() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// Run runs the engine until ctx ends or the duration passes.
func Run(ctx context.Context, o Options) (_ *Result, err error) {
	cfg := o.Config
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	spec := HookSpec(cfg)
	spec.Stack = o.Stack
	spec.Logger = log
	// The hooks name this process, so that cleanup spares them while it lives and a
	// watchdog removes exactly them when it dies.
	if spec.Owner, err = nfq.Self(); err != nil {
		return nil, err
	}
	defer GovernMemory(time.Second)()
	// res is filled in by the deferred teardown steps, also when an error returns nil.
	res := &Result{Started: time.Now()}
	defer func() { res.Ended = time.Now() }()

	var elog *eventLog
	if o.LogPath != "" {
		if elog, err = openLog(o.LogPath, log); err != nil {
			return nil, err
		}
		defer func() {
			var cerr error
			res.Records, res.RecordsLost, cerr = elog.close()
			err = errors.Join(err, cerr)
		}()
	}

	// The capture is closed after the engine's teardown (deferred later, run earlier) has
	// given every held segment its verdict.
	var pcap *pcapCapture
	if o.PcapPath != "" {
		if pcap, err = openPcap(o.PcapPath, pcapComment(cfg, spec), fmt.Sprintf("nfqueue%d", spec.Queue), log); err != nil {
			return nil, err
		}
		defer func() {
			n, lost, missing, cerr := pcap.close()
			res.PcapPackets, res.PcapLost = n, lost
			if missing > 0 {
				log.Warn("pcap: records without their captured packet", "count", missing)
			}
			err = errors.Join(err, cerr)
		}()
	}

	ipt4, ipt6 := o.IPT4, o.IPT6
	want4, want6 := families(cfg.Target.Addresses)
	if ipt4 == nil && want4 {
		if ipt4, err = nfq.NewIPTables(false); err != nil {
			return nil, err
		}
	}
	if ipt6 == nil && want6 {
		if ipt6, err = nfq.NewIPTables(true); err != nil {
			if !want4 {
				return nil, err
			}
			log.Warn("IPv6 segments will not be hooked", "err", err)
			ipt6 = nil
		}
	}
	if !want4 {
		ipt4 = nil
	}
	if !want6 {
		ipt6 = nil
	}

	// The Observer starts before the queue and the hooks, so that it sees the handshakes
	// of the first connections; it stops after the teardown, having seen its effects.
	var obs *observation
	if o.Observe != nil {
		res.Observed = true
		obs = startObservation(ctx, cfg, o.Observe, log)
		defer func() {
			res.Observation, res.ObserveWarnings = obs.finish(log)
		}()
	}

	s := &sink{ready: make(chan struct{})}
	if cfg.Injects() {
		// Raw sockets in this namespace, before anything is hooked: a config that injects
		// fails here rather than silently sending nothing.
		if s.inj, err = openInjector(DefaultInjectMark, ipt4 != nil, ipt6 != nil); err != nil {
			return nil, err
		}
		defer s.inj.close()
	}
	uncl := newUnclassified(cfg.Target.Unclassified)
	eopts := rules.Options{Sink: s, Logger: log}
	eopts.Log = func(r rules.Record) {
		if elog != nil {
			elog.write(r)
		}
		if pcap != nil {
			pcap.record(r)
		}
		if obs != nil {
			obs.annotate(r)
		}
		if o.OnRecord != nil {
			o.OnRecord(r)
		}
	}
	eng := rules.NewEngine(cfg, eopts)

	dec := segment.NewDecoder()
	handler := func(p nfq.Packet) {
		var seg segment.Segment
		if derr := dec.Decode(p.Data, &seg); derr != nil {
			_ = s.Verdict(p.ID, uncl.count(derr, log))
			return
		}
		if pcap != nil {
			pcap.capture(p.ID, p.Time, p.Data)
		}
		eng.Handle(rules.Packet{ID: p.ID, Time: p.Time, Seg: seg, Data: p.Data})
	}

	// The queue outlives ctx: after the hooks are gone it must still read what the kernel
	// queued meanwhile, so that nothing is dropped by closing it.
	qctx, qcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer qcancel()
	openQueue := o.OpenQueue
	if openQueue == nil {
		openQueue = nfq.Open
	}
	q, err := openQueue(qctx, nfq.Config{Num: spec.Queue, Logger: log, OnWritten: o.OnVerdictWritten}, handler)
	if err != nil {
		eng.Close()
		return nil, err
	}
	var hooks *nfq.Hooks
	s.q = q
	close(s.ready)
	defer func() {
		// Teardown order: verdicts for everything held, then hooks, then the queue.
		eng.Close()
		res.Counters = eng.Counters()
		if hooks != nil {
			if rerr := hooks.Remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove iptables hooks (run `finproxy cleanup`): %w", rerr))
			}
		}
		// Let the reader drain what the kernel queued before the hooks went away.
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			ks, kerr := q.KernelStats()
			if kerr != nil || ks.Waiting == 0 {
				break
			}
		}
		q.Flush() // the verdicts given so far written and counted
		if ks, kerr := q.KernelStats(); kerr == nil {
			res.Kernel = &ks
		}
		res.Queue = q.Stats()
		if cerr := q.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close queue: %w", cerr))
		}
		res.Unclassified = uncl.result()
		res.Undecodable = res.Unclassified.Total()
	}()

	if o.IPT4 == nil && o.IPT6 == nil {
		// The host's iptables: no other run may check and install between our check
		// and our install.
		unlock, lerr := nfq.LockInstall(ctx)
		if lerr != nil {
			return res, lerr
		}
		hooks, err = nfq.Install(ipt4, ipt6, spec)
		unlock()
	} else {
		hooks, err = nfq.Install(ipt4, ipt6, spec)
	}
	if err != nil {
		return res, fmt.Errorf("install iptables hooks: %w", err)
	}
	log.Info("hooks installed", "queue", spec.Queue, "hook", cfg.Target.Hook, "port", spec.Port,
		"addresses", cfg.Target.Addresses, "queued", cfg.QueueScope().String())
	if o.Ready != nil {
		o.Ready()
	}
	<-ctx.Done()
	return res, nil
}
