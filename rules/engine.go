package rules

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

// Options configure an Engine.
type Options struct {
	// Sink receives every verdict (required).
	Sink Sink
	// Log, when set, receives one Record per segment, when its verdict is given.
	Log func(Record)
	// Clock is the source of time (nil: SystemClock).
	Clock Clock
	// Logger reports action panics and failed verdicts (nil: discard).
	Logger *slog.Logger
	// MaxConns bounds the connection table (0: DefaultMaxConns).
	MaxConns int
	// IdleTimeout forgets a connection silent this long (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// FinishedTimeout forgets a finished connection (both FINs acknowledged, or a RST
	// seen) silent this long (0: DefaultFinishedTimeout; never more than IdleTimeout).
	FinishedTimeout time.Duration
}

// Engine applies a config's rules to queued segments and gives each its verdict.
//
// Handle is meant to be called from one goroutine (the queue reader); it never blocks on
// anything but the engine's own lock. Timers (delays, hold timeouts) run on other
// goroutines and take the same lock. Sink.Verdict and Options.Log are called with the
// lock held, in verdict order: they must not block for long and must not call the Engine.
//
// Every segment handed to Handle gets exactly one verdict and one Record.
type Engine struct {
	mu sync.Mutex

	msink ModifySink       // the Sink, when it can modify and inject
	dec   *segment.Decoder // describes rewritten and injected segments in their records

	rules    []*Rule
	names    []string // rule names for records and counters
	actions  []string // action names for records
	counters []Counters

	sink   Sink
	log    func(Record)
	clock  Clock
	logger *slog.Logger
	rng    *rand.Rand
	tr     *tracker

	// Segments awaiting a verdict (delayed or held), in the order they came.
	first, last *pending
	npending    int

	closed bool
	ctx    Context
	cur    Packet

	// Injections not sent yet (delayed or waiting), and those waiting for a condition on
	// their 4-tuple, by tuple.
	injections map[*injection]struct{}
	waiting    map[tupleKey][]*injection
	// restartable holds the injections made with Restart not sent yet, by rule and
	// connection.
	restartable map[restartKey][]*injection
	// Client port rewrites (RewriteClientPort), under both the client's real tuple and
	// the tuple the server sees.
	rewrites map[tupleKey]*rewrite

	// observe, when set (tests), sees each segment's connection and phases before rules run.
	observe func(c *Conn, side Side, phases Phase)
}

// pending is a segment awaiting its verdict.
type pending struct {
	id     uint32
	queued time.Time
	seg    segment.Segment
	conn   *Conn
	side   Side
	rule   int
	isHold bool
	hold   Hold
	timer  Timer
	done   bool
	// out replaces the segment's bytes when it is accepted; data is a copy of its bytes
	// kept for the action (Hold.KeepData).
	out  leaving
	data []byte

	prev, next *pending
}

// leaving is what a rewritten segment leaves with: its bytes, and the rule that rewrote
// them (credited in its Modified counter). The zero value: unchanged.
type leaving struct {
	data []byte
	by   int
}

// injection is a segment made by an action, not sent yet.
type injection struct {
	Injection
	rule   int
	conn   *Conn
	key    tupleKey
	queued time.Time
	timer  Timer
	done   bool
}

// restartKey names the restartable injection of a rule on a connection.
type restartKey struct {
	conn *Conn
	rule int
}

// rewrite is a client port rewrite: the client at real appears to the server as alias.
type rewrite struct {
	conn                *Conn
	rule                int
	real, alias, server netip.AddrPort
}

// expireBudget is how many idle connections each Handle may expire per list: more than
// the one connection a Handle can create, so the table keeps up.
const expireBudget = 2

// NewEngine returns an engine for cfg (nil: no rules). It panics without a Sink.
func NewEngine(cfg *Config, opts Options) *Engine {
	if opts.Sink == nil {
		panic("rules: NewEngine needs a Sink")
	}
	if cfg == nil {
		cfg = &Config{}
	}
	e := &Engine{
		rules:  slices.Clone(cfg.Rules),
		sink:   opts.Sink,
		log:    opts.Log,
		clock:  opts.Clock,
		logger: opts.Logger,
		rng:    rand.New(rand.NewPCG(uint64(cfg.Seed), 0)),
		tr:     newTracker(opts.MaxConns, opts.IdleTimeout, opts.FinishedTimeout, cfg.Target, len(cfg.Rules)),
		dec:    segment.NewDecoder(),

		injections: map[*injection]struct{}{},
		waiting:    map[tupleKey][]*injection{},
		rewrites:   map[tupleKey]*rewrite{},

		restartable: map[restartKey][]*injection{},
	}
	e.msink, _ = opts.Sink.(ModifySink)
	if e.clock == nil {
		e.clock = SystemClock()
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	e.setRules(e.rules)
	return e
}

// setRules makes rules the engine's, with their names, action names and fresh counters.
func (e *Engine) setRules(rules []*Rule) {
	e.rules = rules
	e.names = make([]string, len(e.rules))
	e.actions = make([]string, len(e.rules))
	e.counters = make([]Counters, len(e.rules))
	for i, r := range e.rules {
		e.names[i] = r.Name
		if e.names[i] == "" {
			e.names[i] = fmt.Sprintf("rule[%d]", i+1)
		}
		e.actions[i] = r.ActionName
		if e.actions[i] == "" && r.Action != nil {
			e.actions[i] = fmt.Sprintf("%T", r.Action)
		}
		e.counters[i].Rule = e.names[i]
	}
}

// Handle decides the fate of one queued segment: now (pass, drop), or later (delay,
// hold). After Close it accepts at once.
//
// The segment is first applied to its connection (the phases it is matched against are
// computed before); then the connection's held segments whose release condition now holds
// get their verdicts, in the order they were held; then the rules are tried in order and
// the first that matches acts. A segment no rule matches is accepted.
//
// Handle does not keep p.Data (a held or delayed segment is given its verdict by id),
// unless an action asks for a copy (to rewrite or to inject it).
//
// A segment of a connection whose client port is rewritten (Context.RewriteClientPort) is
// rewritten first: the rules see it as it will leave (Packet.Data), on the connection as
// the client sees it (Packet.Seg).
func (e *Engine) Handle(p Packet) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	if p.Time.IsZero() {
		p.Time = now
	}
	if e.closed {
		e.handleClosed(&p, now)
		return
	}
	e.tr.expire(now, expireBudget)
	var out leaving // the bytes the segment leaves with, when rewritten
	xr := -1        // the rule that rewrote it
	if len(e.rewrites) > 0 {
		out.data, xr = e.rewritePort(&p)
		out.by = xr
	}
	c, side := e.tr.get(&p.Seg, now)
	phases := c.phases(side, &p.Seg)
	c.apply(side, &p.Seg, now)
	e.tr.touch(c)
	if e.observe != nil {
		e.observe(c, side, phases)
	}
	if len(c.held) > 0 {
		e.recheck(c, now)
	}
	ri := e.match(c, side, &p.Seg, phases)
	if ri < 0 {
		e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, xr, Accept, now, out)
	} else {
		e.act(ri, &p, c, side, phases, now, out)
	}
	if len(e.waiting) > 0 {
		e.checkWaiting(c, now)
	}
}

// handleClosed accepts a segment that came after Close, without tracking it.
func (e *Engine) handleClosed(p *Packet, now time.Time) {
	var client, server netip.AddrPort
	inc := 0
	if c := e.tr.lookup(&p.Seg); c != nil {
		client, server, inc = c.client, c.server, c.incarnation
	} else {
		client, server, _ = inferSides(&p.Seg, &e.tr.target)
	}
	side := Server
	if p.Seg.Src == client {
		side = Client
	}
	e.finish(p.ID, p.Time, &p.Seg, client, server, inc, side, -1, Accept, now, leaving{})
}

// match returns the index of the rule that acts on the segment, or -1. It counts the
// segment for the nth condition of every rule it satisfies.
func (e *Engine) match(c *Conn, side Side, s *segment.Segment, phases Phase) int {
	chosen := -1
	for i, r := range e.rules {
		m := &r.Match
		if !m.Matches(side, s, phases) {
			continue
		}
		st := &c.rules[i]
		st.seen++
		switch {
		case chosen >= 0:
		case m.Nth > 0 && st.seen != uint32(m.Nth):
		case m.Limit > 0 && st.acted >= uint32(m.Limit):
		case m.GlobalLimit > 0 && e.counters[i].Matched >= uint64(m.GlobalLimit):
		case m.Probability > 0 && m.Probability < 1 && e.rng.Float64() >= m.Probability:
		default:
			chosen = i
		}
	}
	if chosen >= 0 {
		c.rules[chosen].acted++
		e.counters[chosen].Matched++
	}
	return chosen
}

// act runs rule ri's action on the segment (out: its rewritten bytes, if any) and
// carries out its decision: the releases of held segments, the segment's verdict (with
// its client port rewritten if the action asked for it), the injections.
func (e *Engine) act(ri int, p *Packet, c *Conn, side Side, phases Phase, now time.Time, out leaving) {
	e.cur = *p
	e.ctx = Context{Packet: &e.cur, Conn: c, Rule: e.rules[ri], Side: side, Phases: phases, e: e, ri: ri}
	ok := e.apply(ri)
	d := e.ctx.dec
	e.ctx = Context{}
	e.cur = Packet{}
	cnt := &e.counters[ri]
	if !ok {
		e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, ri, Accept, now, out)
		return
	}
	for _, r := range d.releases {
		if r.it.done {
			continue
		}
		r.it.conn.unhold(r.it)
		if r.out != nil {
			r.it.out = leaving{r.out, r.it.rule}
		}
		e.resolve(r.it, r.v, true, now)
	}
	if d.out != nil {
		out = leaving{d.out, ri}
	}
	if d.clientPort != 0 {
		if b, ok := e.startRewrite(ri, c, d.clientPort, p, out.data); ok {
			out = leaving{b, ri}
		}
	}
	switch d.kind {
	case decideDrop:
		cnt.Dropped++
		e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, ri, Drop, now, leaving{})
	case decideMerged:
		cnt.Merged++
		e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, ri, Drop, now, leaving{})
	case decideDelay:
		cnt.Delayed++
		if d.delay <= 0 {
			e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, ri, Accept, now, out)
			break
		}
		it := e.newPending(p, c, side, ri)
		it.out = out
		it.timer = e.clock.AfterFunc(d.delay, func() { e.fire(it) })
	case decideHold:
		e.startHold(ri, p, c, side, d.hold, now, out)
	default: // pass, or no decision
		cnt.Passed++
		e.finish(p.ID, p.Time, &p.Seg, c.client, c.server, c.incarnation, side, ri, Accept, now, out)
	}
	if slices.ContainsFunc(d.injects, func(in Injection) bool { return in.Restart }) {
		// The rule's restartable injections on c not sent yet make way for these.
		for _, it := range slices.Clone(e.restartable[restartKey{c, ri}]) {
			e.dropInjection(it)
		}
	}
	for _, in := range d.injects {
		e.schedule(ri, c, in, now)
	}
}

// apply calls rule ri's action, recovering from a panic (reported false).
func (e *Engine) apply(ri int) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			e.panicked(ri, "action panicked; the segment is accepted", e.cur.Seg.String(), v)
			ok = false
		}
	}()
	if a := e.rules[ri].Action; a != nil {
		a.Apply(&e.ctx)
	}
	return true
}

// panicked counts a panic of rule ri's action (or of a condition it handed the engine)
// and reports it at once: the rule's first with its stack, at level Error; the next ones
// at level Warn, with the count so far, when the count reaches a power of two (a rule that
// panics on every segment does not flood the log). Counters.Panicked has them all.
func (e *Engine) panicked(ri int, msg, seg string, v any) {
	e.counters[ri].Panicked++
	n := e.counters[ri].Panicked
	attrs := []any{"rule", e.names[ri], "action", e.actions[ri], "panic", fmt.Sprint(v), "count", n}
	if seg != "" {
		attrs = append(attrs, "segment", seg)
	}
	switch {
	case n == 1:
		e.logger.Error(msg, append(attrs, "stack", string(debug.Stack()))...)
	case n&(n-1) == 0:
		e.logger.Warn(msg, attrs...)
	}
}

func (e *Engine) startHold(ri int, p *Packet, c *Conn, side Side, h Hold, now time.Time, out leaving) {
	if h.Kind == "" {
		h.Kind = KindHold
	}
	if h.Kind != KindMerge {
		e.counters[ri].Held++
	}
	if h.Timeout <= 0 {
		h.Timeout = DefaultHoldTimeout
	}
	it := e.newPending(p, c, side, ri)
	it.isHold, it.hold, it.out = true, h, out
	if h.KeepData {
		it.data = slices.Clone(p.Data)
	}
	if release, v := e.check(it); release {
		e.resolve(it, v, true, now)
		return
	}
	c.held = append(c.held, it)
	it.timer = e.clock.AfterFunc(h.Timeout, func() { e.fire(it) })
}

// check evaluates a held segment's release condition: whether to release it, and with
// which verdict. A panicking condition releases the segment with Accept.
func (e *Engine) check(it *pending) (release bool, v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			e.panicked(it.rule, "hold condition panicked; the segment is accepted", it.seg.String(), r)
			release, v = true, Accept
		}
	}()
	h := &it.hold
	if h.Until == nil || !h.Until(it.conn) {
		return false, 0
	}
	if h.Decide != nil {
		return true, h.Decide(it.conn)
	}
	return true, h.OnRelease
}

// recheck releases the held segments of c whose condition now holds, in hold order.
func (e *Engine) recheck(c *Conn, now time.Time) {
	kept := c.held[:0]
	for _, it := range c.held {
		if release, v := e.check(it); release {
			e.resolve(it, v, true, now)
		} else {
			kept = append(kept, it)
		}
	}
	clear(c.held[len(kept):])
	c.held = kept
}

// fire gives a delayed segment its verdict, or a held one its timeout verdict.
func (e *Engine) fire(it *pending) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if it.done {
		return
	}
	v := Accept
	if it.isHold {
		it.conn.unhold(it)
		v = it.hold.OnTimeout
	}
	e.resolve(it, v, false, e.clock.Now())
}

func (c *Conn) unhold(it *pending) {
	if i := slices.Index(c.held, it); i >= 0 {
		c.held = slices.Delete(c.held, i, i+1)
	}
}

func (e *Engine) newPending(p *Packet, c *Conn, side Side, ri int) *pending {
	it := &pending{id: p.ID, queued: p.Time, seg: p.Seg, conn: c, side: side, rule: ri}
	it.prev = e.last
	if e.last != nil {
		e.last.next = it
	} else {
		e.first = it
	}
	e.last = it
	e.npending++
	return it
}

// resolve gives a pending segment its verdict (byCondition: its hold's Until released it).
func (e *Engine) resolve(it *pending, v Verdict, byCondition bool, now time.Time) {
	it.done = true
	if it.timer != nil {
		it.timer.Stop()
		it.timer = nil
	}
	if it.prev != nil {
		it.prev.next = it.next
	} else {
		e.first = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else {
		e.last = it.prev
	}
	it.prev, it.next = nil, nil
	e.npending--
	if it.isHold && it.hold.Kind == KindMerge {
		cnt := &e.counters[it.rule]
		switch {
		case v == Drop && byCondition:
			cnt.Merged++
		case v == Drop:
			cnt.Dropped++
		default:
			cnt.Passed++
		}
	}
	c := it.conn
	e.finish(it.id, it.queued, &it.seg, c.client, c.server, c.incarnation, it.side, it.rule, v, now, it.out)
}

// finish gives a segment its verdict (accepted with out's bytes in its place when it has
// some) and writes its record.
func (e *Engine) finish(id uint32, queued time.Time, s *segment.Segment, client, server netip.AddrPort, inc int,
	side Side, ri int, v Verdict, now time.Time, out leaving) {
	modified := false
	if v == Accept && out.data != nil {
		modified = e.acceptModified(id, out.data, out.by)
	} else if err := e.sink.Verdict(id, v); err != nil {
		e.logger.Warn("verdict failed", "id", id, "verdict", v.String(), "err", err)
	}
	if modified && out.by >= 0 {
		e.counters[out.by].Modified++
	}
	if e.log == nil {
		return
	}
	r := Record{
		ID:          id,
		Time:        queued.UnixNano(),
		VerdictTime: now.UnixNano(),
		Client:      client,
		Server:      server,
		Incarnation: inc,
		Side:        side,
		Flags:       s.Flags,
		Seq:         s.Seq,
		Ack:         s.Ack,
		Len:         s.PayloadLen,
		Verdict:     v,
		HeldNS:      max(0, now.Sub(queued).Nanoseconds()),
	}
	if ri >= 0 {
		r.Rule, r.Action = e.names[ri], e.actions[ri]
	}
	if modified {
		e.describe(&r, out.data)
		r.Modified = true
	}
	e.log(r)
}

// acceptModified accepts packet id with out in its place; if the sink cannot, it accepts
// the packet unchanged (reported false).
func (e *Engine) acceptModified(id uint32, out []byte, ri int) bool {
	rule := ""
	if ri >= 0 {
		rule = e.names[ri]
	}
	if e.msink == nil {
		e.logger.Error("the verdict sink cannot return a rewritten segment; accepted unchanged", "id", id, "rule", rule)
	} else if err := e.msink.AcceptModified(id, out); err != nil {
		e.logger.Warn("accepting a rewritten segment failed; accepting it unchanged", "id", id, "rule", rule, "err", err)
	} else {
		return true
	}
	if err := e.sink.Verdict(id, Accept); err != nil {
		e.logger.Warn("verdict failed", "id", id, "verdict", "accept", "err", err)
	}
	return false
}

// describe makes r describe the segment as it left (out): flags, seq, ack, length, and
// the bytes themselves.
func (e *Engine) describe(r *Record, out []byte) {
	var s segment.Segment
	if err := e.dec.Decode(out, &s); err != nil {
		e.logger.Error("a rewritten or injected segment does not decode", "err", err)
	} else {
		r.Flags, r.Seq, r.Ack, r.Len = s.Flags, s.Seq, s.Ack, s.PayloadLen
	}
	r.Out = out
}

// schedule sends an action's injection now, later, or when its condition holds.
func (e *Engine) schedule(ri int, c *Conn, in Injection, now time.Time) {
	if len(in.Data) == 0 && in.Make == nil {
		e.logger.Error("an action injected an empty segment; nothing sent", "rule", e.names[ri])
		return
	}
	it := &injection{Injection: in, rule: ri, conn: c, key: c.key, queued: now}
	if in.Restart {
		k := restartKey{c, ri}
		e.restartable[k] = append(e.restartable[k], it)
	}
	switch {
	case in.Until != nil:
		if e.injectionDue(it, c) {
			e.injectDue(it, c, now)
			return
		}
		timeout := in.Timeout
		if timeout <= 0 {
			timeout = DefaultHoldTimeout
		}
		e.waiting[it.key] = append(e.waiting[it.key], it)
		e.injections[it] = struct{}{}
		it.timer = e.clock.AfterFunc(timeout, func() { e.fireInjection(it) })
	case in.Delay > 0:
		e.injections[it] = struct{}{}
		it.timer = e.clock.AfterFunc(in.Delay, func() { e.fireInjection(it) })
	default:
		e.sendInjection(it, c, now)
	}
}

// injectionDue evaluates a waiting injection's condition for c; a panicking condition
// gives the injection up.
func (e *Engine) injectionDue(it *injection, c *Conn) (due bool) {
	defer func() {
		if r := recover(); r != nil {
			e.panicked(it.rule, "injection condition panicked; the segment is not sent", "", r)
			it.Until = func(*Conn) bool { return false }
			it.SendOnTimeout = false
			due = false
		}
	}()
	return it.Until(c)
}

// checkWaiting sends the injections waiting on c's 4-tuple whose condition now holds.
func (e *Engine) checkWaiting(c *Conn, now time.Time) {
	list := e.waiting[c.key]
	if len(list) == 0 {
		return
	}
	for _, it := range slices.Clone(list) {
		if !it.done && it.Until != nil && e.injectionDue(it, c) {
			e.injectDue(it, c, now)
		}
	}
}

// injectDue sends an injection whose condition came true for c, now or after its Delay.
func (e *Engine) injectDue(it *injection, c *Conn, now time.Time) {
	if it.Delay <= 0 {
		e.sendInjection(it, c, now)
		return
	}
	e.dropInjection(it) // out of the waiting list, its timeout stopped (or done, if it fired)
	// A new injection for the delay: the timeout's callback, if it is already waiting for
	// the lock, finds the old one done.
	d := &injection{Injection: it.Injection, rule: it.rule, conn: c, key: it.key, queued: it.queued}
	d.Until = nil
	d.Restart = false
	e.injections[d] = struct{}{}
	d.timer = e.clock.AfterFunc(d.Delay, func() { e.fireInjection(d) })
}

// fireInjection sends a delayed injection, or ends a waiting one at its timeout.
func (e *Engine) fireInjection(it *injection) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if it.done {
		return
	}
	c := it.conn
	if cur := e.tr.conns[it.key]; cur != nil {
		c = cur
	}
	if it.Until != nil && !it.SendOnTimeout {
		e.dropInjection(it)
		e.logger.Info("an injection's condition did not come true in time; nothing sent", "rule", e.names[it.rule])
		return
	}
	e.sendInjection(it, c, e.clock.Now())
}

// dropInjection forgets an injection that was not sent.
func (e *Engine) dropInjection(it *injection) {
	it.done = true
	if it.timer != nil {
		it.timer.Stop()
		it.timer = nil
	}
	delete(e.injections, it)
	if it.Restart {
		k := restartKey{it.conn, it.rule}
		if list := slices.DeleteFunc(e.restartable[k], func(x *injection) bool { return x == it }); len(list) == 0 {
			delete(e.restartable, k)
		} else {
			e.restartable[k] = list
		}
	}
	if it.Until != nil {
		list := slices.DeleteFunc(e.waiting[it.key], func(x *injection) bool { return x == it })
		if len(list) == 0 {
			delete(e.waiting, it.key)
		} else {
			e.waiting[it.key] = list
		}
	}
}

// makeInjection runs an injection's Make for c; a panic is the rule's, and sends nothing.
func (e *Engine) makeInjection(it *injection, c *Conn) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			e.panicked(it.rule, "making an injection panicked; the segment is not sent", "", r)
			data, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return it.Make(c)
}

// sendInjection sends an injection and writes its record, on connection c.
func (e *Engine) sendInjection(it *injection, c *Conn, now time.Time) {
	e.dropInjection(it)
	if it.Make != nil {
		data, err := e.makeInjection(it, c)
		if err != nil {
			e.logger.Warn("an injection could not be made; nothing sent", "rule", e.names[it.rule], "err", err)
			return
		}
		if len(data) == 0 {
			return // nothing to send then
		}
		it.Data = data
	}
	v := Accept
	var err error
	if e.msink == nil {
		err = fmt.Errorf("the verdict sink cannot inject")
	} else {
		err = e.msink.Inject(it.Data)
	}
	if err != nil {
		v = Drop
		e.logger.Warn("injecting a segment failed", "rule", e.names[it.rule], "err", err)
	} else {
		e.counters[it.rule].Injected++
	}
	if e.log == nil {
		return
	}
	r := Record{
		Time:        it.queued.UnixNano(),
		VerdictTime: now.UnixNano(),
		Client:      c.client,
		Server:      c.server,
		Incarnation: c.incarnation,
		Rule:        e.names[it.rule],
		Action:      e.actions[it.rule],
		Verdict:     v,
		HeldNS:      max(0, now.Sub(it.queued).Nanoseconds()),
		Injected:    true,
	}
	e.describe(&r, it.Data)
	var s segment.Segment
	if e.dec.Decode(it.Data, &s) == nil {
		r.Side = c.SideOf(s.Src)
		if r.Side == AnySide && c.alias == s.Src {
			r.Side = Client
		}
	}
	e.log(r)
}

// startRewrite starts rewriting c's client port to port (RewriteClientPort). When the
// current segment comes from the client it returns its bytes (out, or p.Data) with the
// port rewritten, and true. If that segment cannot be rewritten, nothing is: the
// connection goes on unchanged.
func (e *Engine) startRewrite(ri int, c *Conn, port uint16, p *Packet, out []byte) ([]byte, bool) {
	alias := netip.AddrPortFrom(c.client.Addr(), port)
	if alias == c.client || c.alias.IsValid() {
		return nil, false
	}
	var b []byte
	if p.Seg.Src == c.client {
		data := out
		if data == nil {
			data = p.Data
		}
		var err error
		if b, err = rewritePort(data, port, true); err != nil {
			e.logger.Warn("rewriting the client port failed; the connection goes on unchanged", "rule", e.names[ri], "err", err)
			return nil, false
		}
	}
	rw := &rewrite{conn: c, rule: ri, real: c.client, alias: alias, server: c.server}
	c.alias = alias
	e.rewrites[keyOf(rw.real, rw.server)] = rw
	e.rewrites[keyOf(rw.alias, rw.server)] = rw
	return b, b != nil
}

// rewritePort rewrites segment p of a connection whose client port is rewritten: a
// segment from the client leaves with the alias port, a segment from the server to the
// alias is the connection's and leaves to the client's real port (p.Seg says so for the
// tracker). It returns the bytes as they leave and the rule that asked, or nil and -1.
func (e *Engine) rewritePort(p *Packet) ([]byte, int) {
	k := keyOf(p.Seg.Src, p.Seg.Dst)
	rw := e.rewrites[k]
	if rw == nil {
		return nil, -1
	}
	if rw.conn.list == nil {
		// The connection is no longer tracked: the rewrite ends with it.
		for _, key := range []tupleKey{keyOf(rw.real, rw.server), keyOf(rw.alias, rw.server)} {
			if e.rewrites[key] == rw {
				delete(e.rewrites, key)
			}
		}
		return nil, -1
	}
	var (
		port  uint16
		isSrc bool
	)
	switch {
	case p.Seg.Src == rw.real && p.Seg.Dst == rw.server:
		port, isSrc = rw.alias.Port(), true
	case p.Seg.Src == rw.server && p.Seg.Dst == rw.alias:
		port = rw.real.Port()
	default:
		return nil, -1
	}
	out, err := rewritePort(p.Data, port, isSrc)
	if err != nil {
		e.logger.Warn("rewriting the client port failed; the segment leaves unchanged", "rule", e.ruleName(rw.rule), "err", err)
		return nil, -1
	}
	if !isSrc {
		p.Seg.Dst = rw.real
	}
	p.Data = out
	return out, rw.rule
}

// rewritePort returns the IP packet b with its source (isSrc) or destination port set.
func rewritePort(b []byte, port uint16, isSrc bool) ([]byte, error) {
	m, err := mutate.Parse(b)
	if err != nil {
		return nil, err
	}
	if isSrc {
		m.SetSrcPort(port)
	} else {
		m.SetDstPort(port)
	}
	return m.Bytes()
}

// Close gives every delayed and held segment its verdict now (accept: nothing queued is
// lost), in the order they came, and stops their timers. Later calls to Handle accept at
// once. Close is idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	e.releaseAll("finproxy is stopping")
}

// Counters returns what each rule did so far, in config order. Every segment a rule
// acted on (Matched) is counted once more when its fate is known: as Passed, Dropped,
// Delayed or Held by the rule's decision (a hold counts as Held whatever its outcome),
// and for a merge as Merged when the held ACK was dropped into its FIN, otherwise as
// Passed or Dropped. A segment whose action panicked is counted as Matched and Panicked.
func (e *Engine) Counters() []Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Counters, len(e.counters))
	copy(out, e.counters)
	return out
}

// Conns reports how many connections are tracked, after forgetting the expired ones.
func (e *Engine) Conns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tr.expire(e.clock.Now(), -1)
	return e.tr.len()
}

// Pending reports how many segments await their verdict (delayed or held).
func (e *Engine) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.npending
}

// releaseAll accepts every held or delayed segment now and drops the injections not yet
// sent (why says so in the log): at Close, and when Replace swaps the rules.
func (e *Engine) releaseAll(why string) {
	now := e.clock.Now()
	for it := e.first; it != nil; {
		next := it.next
		if it.isHold {
			it.conn.held = nil
		}
		e.resolve(it, Accept, false, now)
		it = next
	}
	if n := len(e.injections); n > 0 {
		e.logger.Info("injections not sent: "+why, "count", n)
		for it := range e.injections {
			e.dropInjection(it)
		}
	}
}
