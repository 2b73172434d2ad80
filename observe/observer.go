package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"golang.org/x/sys/unix"
)

// Options configure an Observer.
type Options struct {
	// Filter selects the connections. Its ports are also filtered in the kernel (tracefs
	// event filters, inet_diag bytecode). Without ports every TCP socket of the host
	// (tracepoints) and of NetNS (sock_diag) is followed.
	Filter Filter
	// NetNS is the network namespace sock_diag polls: "" for the current one, an
	// `ip netns` name, or a path such as /proc/PID/ns/net (for an open handle h,
	// fmt.Sprintf("/proc/self/fd/%d", h)). The tracepoints see every namespace
	// (filtered by Filter only).
	NetNS string
	// NetNSs, when not empty, replaces NetNS: sock_diag polls each of these namespaces
	// (each written as NetNS takes it, "" being the current one) and merges their sockets
	// into one set of timelines, for applications that live in different namespaces (a
	// client and a server namespace around a router). Each poll dumps them one after the
	// other; a namespace that cannot be opened is a warning, the others are polled. Two
	// namespaces holding the same 4-tuple (the same addresses on both ends) cannot be told
	// apart. Setting both NetNS and NetNSs is an error.
	NetNSs []string
	// PollInterval is the sock_diag period (25 ms if zero). It bounds the time resolution
	// of what only sock_diag sees (timewait substate changes other than TIME_WAIT's entry,
	// the end of a timewait socket). When a poll costs more than a tenth of it (tens of
	// thousands of sockets on the port), the period grows to ten times the poll's cost, up
	// to 2 s: Stats.LongestPollPeriodNS says how far.
	PollInterval time.Duration
	// Logger receives the warnings (and debug details); nil discards them.
	Logger *slog.Logger
	// MaxConnections bounds the connections kept in detail (DefaultMaxConnections if
	// zero): beyond it the oldest finished ones are forgotten, their timelines only
	// counted in Report.Summary, so that a long run's memory stays flat. Connections that
	// have not finished (a side's socket or its timewait socket still there) are kept
	// whatever their number.
	MaxConnections int
	// NoTrace and NoDiag turn a source off.
	NoTrace, NoDiag bool
	// Nice, when set, is the nice value of the observer's own two threads, the
	// tracepoint reader's and the sock_diag poller's (each goroutine keeps its thread,
	// which ends with it). finproxy run raises the packet path's priority above the
	// applications' and leaves the observer at theirs, so that watching them does not
	// take their CPU first.
	Nice *int
}

// Observer follows TCP connections through the kernel's tracepoints and sock_diag and
// assembles per-connection timelines. Create it with New, run it with Run, read it with
// Snapshot, Leaks and Events; Close releases it (Run does too on return).
type Observer struct {
	opts   Options
	log    *slog.Logger
	clock  Clock
	start  time.Duration
	trace  *traceInstance
	diags  []*Diag  // one per namespace polled
	netns  []string // the namespaces of diags
	owners *Owners

	mu          sync.Mutex
	tl          *timeline
	stats       Stats
	warnings    []string
	parseWarned int
	lostWarned  int
	stream      chan Event
	traceAlive  bool
	diagAlive   bool
	markerSeen  uint64
	lastPoll    time.Duration // start of the last poll applied
	changed     chan struct{} // closed and replaced when markerSeen, lastPoll or liveness change
	released    bool
	streamDone  bool

	// Notes given to Annotate wait in pending (under nmu, never held long) until the next
	// holder of mu applies them: an annotator (the fault engine, on the path of a queued
	// segment) never waits for a poll being applied.
	nmu     sync.Mutex
	pending []pendingNote
	pollBuf []timedSocket // the sockets of the last poll, only for pollOnce
	spare   []pendingNote // the buffer applyNotes emptied last

	kick chan struct{} // a handoff asks the poll loop for a poll now (capacity 1)
	// syncPoll asks the poll loop for a poll now, whatever it costs (Sync: the end of a
	// run waits for it; with the period grown to seconds by a costly dump, the periodic
	// poll could be that far away). Capacity 1.
	syncPoll chan struct{}

	syncSeq   atomic.Uint64
	running   atomic.Bool
	cancel    context.CancelFunc
	runDone   chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New starts the sources: it creates the tracefs instance (events are recorded from
// then on, read or not) and the sock_diag socket. A source that cannot start is reported
// in Warnings and the Observer carries on with the other; New fails only when none starts.
func New(opts Options) (*Observer, error) {
	if opts.NetNS != "" && len(opts.NetNSs) > 0 {
		return nil, errors.New("observe: set NetNS or NetNSs, not both")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 25 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Observer{opts: opts, log: log, clock: NewClock(), owners: &Owners{}, changed: make(chan struct{}),
		kick: make(chan struct{}, 1), syncPoll: make(chan struct{}, 1)}
	o.start = MonoNow()
	var errs []error
	if !opts.NoTrace {
		t, warns, err := openTraceInstance(opts.Filter)
		for _, w := range warns {
			o.warn(w)
		}
		if err != nil {
			errs = append(errs, err)
			o.warn(fmt.Sprintf("tracepoints unavailable, states come from sock_diag polls only: %v", err))
		} else {
			o.trace, o.traceAlive = t, true
		}
	}
	if !opts.NoDiag {
		var failed []error
		for _, ns := range namespaces(opts) {
			d, err := OpenDiag(ns, opts.Filter)
			if err != nil {
				failed = append(failed, err)
				continue
			}
			o.diags, o.netns = append(o.diags, d), append(o.netns, ns)
		}
		switch {
		case len(o.diags) == 0:
			err := errors.Join(failed...)
			errs = append(errs, err)
			o.warn(fmt.Sprintf("sock_diag unavailable, no TIME_WAIT, timers or owners: %v", err))
		case len(failed) > 0:
			o.warn(fmt.Sprintf("sock_diag polls only %s: %v", nsList(o.netns), errors.Join(failed...)))
		}
		o.diagAlive = len(o.diags) > 0
	}
	if o.trace == nil && len(o.diags) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("both sources are turned off"))
		}
		return nil, fmt.Errorf("observe: no source could start: %w", errors.Join(errs...))
	}
	o.tl = newTimeline(opts.Filter, o.trace != nil, opts.MaxConnections)
	// The addresses of the polled namespaces are covered from the start: sock_diag's
	// silence about one of their sockets is then an answer, not a blind spot.
	for _, ns := range o.netns {
		addrs, err := namespaceAddrs(ns)
		if err != nil {
			o.warn(fmt.Sprintf("addresses of %s unknown (only sockets seen in polls count as covered): %v", nsList([]string{ns}), err))
			continue
		}
		for _, a := range addrs {
			o.tl.seenLocal[a] = true
		}
	}
	return o, nil
}

// namespaces lists the namespaces sock_diag polls, without repetitions.
func namespaces(opts Options) []string {
	if len(opts.NetNSs) == 0 {
		return []string{opts.NetNS}
	}
	var out []string
	for _, ns := range opts.NetNSs {
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// nsList names namespaces for a message ("" is the current one).
func nsList(nss []string) string {
	names := make([]string, len(nss))
	for i, ns := range nss {
		names[i] = ns
		if ns == "" {
			names[i] = "the current namespace"
		}
	}
	return strings.Join(names, ", ")
}

func (o *Observer) warn(msg string) {
	o.warnings = append(o.warnings, msg)
	o.log.Warn(msg)
}

// Warnings returns what did not work: sources that failed to start or stopped, stale
// instances removed, unparsable lines.
func (o *Observer) Warnings() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.warnings...)
}

// Clock returns the mapping between the kernel's CLOCK_MONOTONIC and Go times used for
// every time the Observer reports.
func (o *Observer) Clock() Clock { return o.clock }

// Instance returns the tracefs instance directory ("" without the tracepoint source).
func (o *Observer) Instance() string {
	if o.trace == nil {
		return ""
	}
	return o.trace.dir
}

// Events returns a live stream of the events: every tracepoint event that passes the
// Filter (as the kernel reported it, FIN_WAIT2 -> CLOSE included), followed by what the
// Observer derived (StateChange with Source sock_diag, or with Source trace for a
// timewait socket confirmed by sock_diag). The stream starts with the first call; events
// that do not fit in its buffer are dropped and counted (Stats.StreamDropped). It is
// closed when Run returns.
func (o *Observer) Events() <-chan Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream == nil {
		o.stream = make(chan Event, 4096)
		if o.streamDone {
			close(o.stream)
		}
	}
	return o.stream
}

// closeStream ends the stream once no reader can send; o.mu is held.
func (o *Observer) closeStream() {
	if !o.streamDone && o.stream != nil {
		close(o.stream)
	}
	o.streamDone = true
}

// send puts e on the stream; o.mu is held.
func (o *Observer) send(e Event) {
	if o.stream == nil || o.streamDone {
		return
	}
	select {
	case o.stream <- withTime(e, o.clock):
	default:
		o.stats.StreamDropped++
	}
}

func (o *Observer) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Run reads the sources until ctx ends (then it returns nil) or until every source has
// failed. It releases the Observer (Close) before returning.
func (o *Observer) Run(ctx context.Context) error {
	if !o.running.CompareAndSwap(false, true) {
		return errors.New("observe: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	o.mu.Lock()
	if o.released {
		o.mu.Unlock()
		cancel()
		return errors.New("observe: Run after Close")
	}
	o.cancel = cancel
	o.runDone = make(chan struct{})
	o.mu.Unlock()
	defer cancel()

	var wg sync.WaitGroup
	failed := make(chan struct{}, 2)
	sources := 0
	if o.trace != nil {
		sources++
		wg.Go(func() {
			defer o.ownThread()()
			err := o.trace.read(ctx, o.line)
			o.mu.Lock()
			o.traceAlive = false
			o.tl.trace = false
			if err != nil {
				o.warn(fmt.Sprintf("tracepoint reader stopped, states come from sock_diag polls from now on: %v", err))
			}
			o.notify()
			o.mu.Unlock()
			if err != nil {
				failed <- struct{}{}
			}
		})
	}
	if len(o.diags) > 0 {
		sources++
		wg.Go(func() {
			defer o.ownThread()()
			o.pollLoop(ctx)
			o.mu.Lock()
			o.diagAlive = false
			o.notify()
			o.mu.Unlock()
		})
	}
	var err error
	for n := 0; ; n++ {
		if n == sources {
			err = errors.New("observe: every source failed")
			cancel()
			break
		}
		select {
		case <-ctx.Done():
		case <-failed:
			continue
		}
		break
	}
	wg.Wait()
	cerr := o.release()
	o.mu.Lock()
	close(o.runDone)
	o.closeStream()
	o.mu.Unlock()
	return errors.Join(err, cerr)
}

// line handles one line of trace_pipe.
func (o *Observer) line(l string) {
	ev, err := ParseLine(l)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applyNotes()
	o.stats.TraceLines++
	switch {
	case errors.Is(err, ErrNotEvent):
		return
	case errors.Is(err, ErrUnknownEvent):
		o.stats.UnknownEvents++
		return
	case err != nil:
		o.stats.ParseErrors++
		if o.parseWarned < 5 {
			o.parseWarned++
			o.warn(err.Error())
		}
		return
	}
	switch e := ev.(type) {
	case Marker:
		if n, ok := strings.CutPrefix(e.Text, "finproxy-sync "); ok {
			if v, err := strconv.ParseUint(strings.TrimSpace(n), 10, 64); err == nil && v > o.markerSeen {
				o.markerSeen = v
				o.notify()
			}
		}
		return
	case Lost:
		o.stats.LostEvents += e.Count
		if o.lostWarned < 5 {
			o.lostWarned++
			o.warn(fmt.Sprintf("the trace ring buffer of CPU %d lost %d events", e.CPU, e.Count))
		}
		return
	}
	if ev, ok := o.tl.applyEvent(ev); ok {
		if sc, isState := ev.(StateChange); isState && sc.Handoff {
			// A full socket was just replaced by a timewait socket: only sock_diag sees
			// what it is, and a TIME_WAIT a RST ends within milliseconds (a peer's RST
			// answering a retransmitted FIN) would be gone by the next periodic poll.
			select {
			case o.kick <- struct{}{}:
			default:
			}
		}
		o.send(ev)
	}
	o.drain()
}

// drain streams the derived events of the timeline; o.mu is held.
func (o *Observer) drain() {
	for _, e := range o.tl.out {
		o.send(e)
	}
	o.tl.out = o.tl.out[:0]
	o.stats.Filtered = o.tl.filtered
	o.stats.Evicted = o.tl.evicted
}

// pollCostShare bounds the share of a CPU that polling takes: the wait after a poll is at
// least (pollCostShare-1) times what the poll cost. With the few sockets of a test the
// period stays Options.PollInterval; with the tens of thousands of TIME_WAIT sockets a
// connection churn leaves it grows, so that the dumps never crowd out the queue (dumping
// every 25 ms took most of a CPU in the benchmark's churn).
const pollCostShare = 10

// maxPollInterval caps the period however much a poll costs.
const maxPollInterval = 2 * time.Second

// nextPollWait is how long to wait after a poll that cost cost.
func nextPollWait(base, cost time.Duration) time.Duration {
	return min(max(base-cost, (pollCostShare-1)*cost), maxPollInterval)
}

// threadCPU is the CPU time the calling OS thread has used (ok false where it cannot be
// read).
func threadCPU() (time.Duration, bool) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// ownThread locks the calling goroutine to its thread and gives the thread Options.Nice;
// the function it returns gives the thread its nice value back and unlocks it. (A thread
// left at the observer's value would pass it on to threads started from it: ending the
// goroutine locked does not end the process's main thread, which the runtime keeps, and
// which then started threads at the observer's value, seen in TestPrivilegedObserverNice.)
func (o *Observer) ownThread() (release func()) {
	runtime.LockOSThread()
	if o.opts.Nice == nil {
		return runtime.UnlockOSThread
	}
	tid := unix.Gettid()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err == nil {
		err = unix.Setpriority(unix.PRIO_PROCESS, tid, *o.opts.Nice)
	}
	if err != nil {
		o.log.Debug("observe: cannot set the thread's nice value", "nice", *o.opts.Nice, "err", err)
		return runtime.UnlockOSThread
	}
	return func() {
		// The system call returns 20 - nice.
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 20-p); err != nil {
			// The thread must not go back to the runtime's pool at the observer's value.
			o.log.Debug("observe: cannot restore the thread's nice value; it ends with its goroutine", "err", err)
			return
		}
		runtime.UnlockOSThread()
	}
}

// pollLoop runs on a thread of its own (ownThread): a poll's cost is the CPU time it
// takes, read from its thread. On a loaded machine its wall time also counts the waits
// for a CPU and for the timeline's lock, and a period grown from those (to seconds) let a
// FIN_WAIT2 timewait socket of 1 s live and die between two polls (e2e fin-wait-2-hang
// under the suite's load, 3 runs of 20).
func (o *Observer) pollLoop(ctx context.Context) {
	failures := 0
	var kb kickBudget
	var prev time.Time
	for {
		start := time.Now()
		cpu0, cpuOK := threadCPU()
		o.pollOnce(&failures)
		end := time.Now()
		cost := end.Sub(start)
		if cpu1, ok := threadCPU(); cpuOK && ok {
			cost = cpu1 - cpu0
		}
		wait := nextPollWait(o.opts.PollInterval, cost)
		o.mu.Lock()
		o.stats.PollNS += uint64(cost)
		if gap := start.Sub(prev); !prev.IsZero() && time.Duration(o.stats.LongestPollPeriodNS) < gap {
			o.stats.LongestPollPeriodNS = uint64(gap)
		}
		o.mu.Unlock()
		prev = start
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
			kb.refill(time.Now())
		case <-o.syncPoll:
			timer.Stop()
		case <-o.kick:
			// A handoff to a timewait socket: poll now if the budget of such polls allows
			// (a churn hands off thousands of sockets a second), else when it does.
			timer.Stop()
			now := time.Now()
			due := wait - now.Sub(end) // until the periodic poll
			rest := kb.take(now, cost)
			if rest >= due {
				// The budget cannot bring this poll forward: it is the periodic one, and
				// not paid for from the budget.
				kb.credit += cost
				rest = due
			} else {
				o.mu.Lock()
				o.stats.KickedPolls++
				o.mu.Unlock()
			}
			if rest > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(rest):
				}
			}
		}
	}
}

// kickShare is the share of a CPU that polls asked for by handoffs may take, beyond the
// periodic ones; kickBurst the most of it saved up.
const (
	kickShare = 20 // one twentieth: 5%
	kickBurst = 100 * time.Millisecond
)

// kickBudget is a token bucket of polling time for polls asked for by handoffs: it fills
// at 1/kickShare of the time passing, up to kickBurst.
type kickBudget struct {
	credit time.Duration
	last   time.Time
}

func (b *kickBudget) refill(now time.Time) {
	if b.last.IsZero() {
		b.credit = kickBurst
	} else {
		b.credit = min(kickBurst, b.credit+now.Sub(b.last)/kickShare)
	}
	b.last = now
}

// take spends cost (what the next poll is expected to cost) and returns how long to wait
// until the budget has it: 0 when it has it now.
func (b *kickBudget) take(now time.Time, cost time.Duration) time.Duration {
	b.refill(now)
	b.credit -= cost
	if b.credit >= 0 {
		return 0
	}
	return -b.credit * kickShare
}

func (o *Observer) pollOnce(failures *int) {
	start := MonoNow()
	// The sockets of every namespace go to one buffer, used again by the next poll: with
	// tens of thousands of sockets, a poll's list is megabytes (and as much again while
	// it grows), every 25 ms.
	socks := o.pollBuf[:0]
	var err error
	for _, d := range o.diags {
		// A poll is applied whole or not at all: a namespace missing from it would make
		// its sockets look gone.
		if socks, err = d.dumpTimed(socks); err != nil {
			break
		}
	}
	end := MonoNow()
	defer func() { o.pollBuf = shrink(socks) }()
	o.mu.Lock()
	if err != nil {
		o.stats.PollErrors++
		*failures++
		if *failures == 1 {
			o.warn(fmt.Sprintf("sock_diag poll failed: %v", err))
		}
		o.mu.Unlock()
		return
	}
	*failures = 0
	o.stats.Polls++
	o.applyNotes()
	need := o.tl.applyPoll(poll{start: start, at: start + (end-start)/2}, socks)
	o.lastPoll = start
	o.drain()
	o.notify()
	o.mu.Unlock()
	o.resolveOwners(need)
}

// resolveOwners looks inodes up in /proc without holding o.mu, then records what it
// found in one pass over the sides (a pass per inode took a fifth of the observer's CPU
// with 20k sockets, holding o.mu).
func (o *Observer) resolveOwners(inodes []uint32) {
	var found map[uint32]Process
	for _, ino := range inodes {
		if p, ok := o.owners.Lookup(ino); ok {
			if found == nil {
				found = map[uint32]Process{}
			}
			found[ino] = p
		}
	}
	if len(found) > 0 {
		o.mu.Lock()
		o.tl.setOwners(found)
		o.mu.Unlock()
	}
}

// Sync waits until every event that happened before the call has been applied: a
// marker written to the trace instance has come out of trace_pipe (events are read in
// time order) and a sock_diag poll started after the call has been applied (it asks for
// one at once, however long the period has grown). It needs Run to be running; it does
// not wait for a source that has stopped.
func (o *Observer) Sync(ctx context.Context) error {
	seq := o.syncSeq.Add(1)
	now := MonoNow()
	o.mu.Lock()
	traceAlive, diagAlive := o.traceAlive, o.diagAlive
	o.mu.Unlock()
	if diagAlive {
		select {
		case o.syncPoll <- struct{}{}:
		default: // one is asked for already: it starts after this call's now
		}
	}
	if traceAlive {
		if err := o.trace.mark(fmt.Sprintf("finproxy-sync %d", seq)); err != nil {
			return fmt.Errorf("observe: write trace marker: %w", err)
		}
	}
	for {
		o.mu.Lock()
		done := (!o.traceAlive || o.markerSeen >= seq) && (!o.diagAlive || o.lastPoll > now)
		ch := o.changed
		o.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Snapshot returns what has been observed so far.
func (o *Observer) Snapshot() Report {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applyNotes()
	now := MonoNow()
	conns, sum := o.tl.report(o.clock, now)
	r := Report{
		Start:       o.clock.Time(o.start),
		Taken:       o.clock.Time(now),
		Sources:     Sources{Trace: o.trace != nil, Diag: len(o.diags) > 0, Poll: Duration(o.opts.PollInterval)},
		Warnings:    append([]string(nil), o.warnings...),
		Stats:       o.stats,
		Connections: conns,
		Summary:     sum,
	}
	if o.trace != nil {
		r.Sources.Instance = o.trace.dir
		if !o.released {
			r.Stats.LostEvents = max(r.Stats.LostEvents, o.trace.overruns())
		}
	}
	switch len(o.diags) {
	case 0:
		r.Sources.Poll = 0
	case 1:
		r.Sources.NetNS = o.netns[0]
	default:
		r.Sources.NetNSs = slices.Clone(o.netns)
	}
	return r
}

// Leaks lists the sockets held in CLOSE_WAIT for at least threshold, with the process
// holding each (looked up now if it was not known).
func (o *Observer) Leaks(threshold time.Duration) []Leak {
	o.mu.Lock()
	o.applyNotes()
	ls := o.tl.leaks(o.clock, MonoNow(), threshold)
	o.mu.Unlock()
	for i := range ls {
		if ls[i].Owner == nil && ls[i].Inode != 0 {
			if p, ok := o.owners.Lookup(ls[i].Inode); ok {
				ls[i].Owner = &p
				o.mu.Lock()
				o.tl.setOwner(ls[i].Inode, p)
				o.mu.Unlock()
			}
		}
	}
	return ls
}

// Annotate puts an external event (a segment verdict of the fault engine, say) on the
// timeline of the connection of its 4-tuple. n.At is converted with Clock, exactly when
// it comes from time.Now() in this process. The Observer keeps a copy of n.Record.
func (o *Observer) Annotate(n Note) { o.annotate(n.At, n.Src, n.Dst, n.Text, n.Record) }

// AnnotateRecord is Annotate for a note of a record without a text (it reads the
// record, keeping a copy): r does not escape, so a caller on a queued segment's path
// (finproxy run notes every segment) can pass a record of its stack.
func (o *Observer) AnnotateRecord(at time.Time, src, dst netip.AddrPort, r *eventlog.Record) {
	o.annotate(at, src, dst, "", r)
}

func (o *Observer) annotate(at time.Time, src, dst netip.AddrPort, text string, r *eventlog.Record) {
	rec := pendingNote{at: o.clock.Mono(at), src: unmapAP(src), dst: unmapAP(dst), text: text}
	if r != nil {
		// A copy, which the timeline keeps compactly.
		rec.rec, rec.hasRec = *r, true
	}
	o.nmu.Lock()
	o.pending = append(o.pending, rec)
	full := len(o.pending) >= maxPendingNotes
	o.nmu.Unlock()
	if full {
		o.mu.Lock()
		o.applyNotes()
		o.mu.Unlock()
	}
}

// maxPendingNotes bounds the notes waiting for mu: beyond it Annotate applies them itself.
const maxPendingNotes = 4096

// applyNotes puts the pending notes on their timelines; o.mu is held.
func (o *Observer) applyNotes() {
	o.nmu.Lock()
	p := o.pending
	o.pending, o.spare = o.spare[:0], nil
	o.nmu.Unlock()
	defer func() {
		// The buffer is used again, unless a burst made it big: a run's queued segments
		// make no garbage on their way to the timeline (a pending note is 330 bytes).
		clear(p)
		if cap(p) <= maxPendingNotes/4 {
			o.nmu.Lock()
			o.spare = p[:0]
			o.nmu.Unlock()
		}
	}()
	for i := range p {
		n := &p[i]
		nr := noteRec{at: n.at, src: n.src, dst: n.dst, text: n.text}
		if n.hasRec {
			nr.rec = &n.rec
		}
		o.tl.annotate(nr)
	}
}

// pendingNote is a note waiting in Observer.pending, its record copied.
type pendingNote struct {
	at       time.Duration
	src, dst netip.AddrPort
	text     string
	rec      eventlog.Record
	hasRec   bool
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Close stops Run (if it runs) and waits for it, removes the tracefs instance and
// closes the sock_diag socket. It is idempotent.
func (o *Observer) Close() error {
	o.mu.Lock()
	cancel, done := o.cancel, o.runDone
	o.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return o.release()
}

// release frees the sources once; the readers must have stopped.
func (o *Observer) release() error {
	o.closeOnce.Do(func() {
		var errs []error
		if o.trace != nil {
			lost := o.trace.overruns()
			o.mu.Lock()
			o.stats.LostEvents = max(o.stats.LostEvents, lost)
			o.released = true
			o.mu.Unlock()
			if err := o.trace.close(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, d := range o.diags {
			if err := d.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		o.mu.Lock()
		o.released = true
		o.traceAlive, o.diagAlive = false, false
		if o.runDone == nil {
			o.closeStream() // Run never ran: nothing sends
		}
		o.notify()
		o.mu.Unlock()
		o.closeErr = errors.Join(errs...)
	})
	return o.closeErr
}
