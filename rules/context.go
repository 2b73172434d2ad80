package rules

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/finproxy/finproxy/segment"
)

// Context is handed to Action.Apply: the segment, its connection, the rule, and the
// engine's ways to decide the segment's fate. It is valid only during Apply.
//
// An action decides at most once (a second decision panics, which the engine turns into
// an accepted segment and a logged error). An action that decides nothing passes the
// segment. The decision takes effect after Apply returns, so a panicking action never
// gives a segment two verdicts.
type Context struct {
	// Packet is the segment; Packet.Data is valid only during Apply.
	Packet *Packet
	// Conn is the segment's connection, already updated with the segment.
	Conn *Conn
	// Rule is the rule that matched.
	Rule *Rule
	// Side is the segment's sender.
	Side Side
	// Phases are the phases that held for the segment (before it was applied to Conn).
	Phases Phase

	e   *Engine
	ri  int // the rule's index
	dec decision
}

type decisionKind uint8

const (
	decideNone decisionKind = iota
	decidePass
	decideDrop
	decideDelay
	decideHold
	decideMerged
)

type decision struct {
	kind  decisionKind
	delay time.Duration
	hold  Hold
	// out replaces the segment's bytes when it is accepted (PassModified, or a delayed or
	// held segment).
	out []byte
	// Carried out whatever the kind: releases first, then the segment's own verdict, then
	// injections; clientPort (when not 0) before the verdict.
	releases   []release
	injects    []Injection
	clientPort uint16
}

type release struct {
	it  *pending
	v   Verdict
	out []byte
}

// Hold kinds: which counter a hold feeds.
const (
	// KindHold counts the segment as Held, whatever becomes of it.
	KindHold = "hold"
	// KindMerge counts the segment as Merged when its release condition dropped it,
	// otherwise as Passed or Dropped by its verdict.
	KindMerge = "merge"
)

// DefaultHoldTimeout bounds a Hold whose Timeout is not positive.
const DefaultHoldTimeout = 2 * time.Second

// Hold keeps a segment until an event or a timeout.
type Hold struct {
	// Until is the release condition, checked right away (true: the verdict is given
	// now), then after every later segment of the connection has been applied to it. Nil:
	// only the timeout releases the segment.
	Until func(c *Conn) bool
	// OnRelease is the verdict when Until became true (unless Decide is set).
	OnRelease Verdict
	// Decide, when set, chooses the verdict on release by Until instead of OnRelease.
	Decide func(c *Conn) Verdict
	// Timeout releases the segment with OnTimeout if Until has not become true by then
	// (not positive: DefaultHoldTimeout).
	Timeout   time.Duration
	OnTimeout Verdict
	// Kind is KindHold (default) or KindMerge.
	Kind string
	// KeepData keeps a copy of the segment's bytes (Packet.Data) with it, for an action
	// that releases it changed (Context.Held, Held.Data, Context.ReleaseModified).
	KeepData bool
}

func (c *Context) decide(d decision) {
	if c.dec.kind != decideNone {
		panic("rules: an action decided twice on one segment")
	}
	c.dec.kind, c.dec.delay, c.dec.hold, c.dec.out = d.kind, d.delay, d.hold, d.out
}

// Pass accepts the segment now.
func (c *Context) Pass() { c.decide(decision{kind: decidePass}) }

// Drop drops the segment now.
func (c *Context) Drop() { c.decide(decision{kind: decideDrop}) }

// Delay accepts the segment after d (not positive: now; counted as delayed either way).
func (c *Context) Delay(d time.Duration) { c.decide(decision{kind: decideDelay, delay: d}) }

// Hold keeps the segment as h says.
func (c *Context) Hold(h Hold) { c.decide(decision{kind: decideHold, hold: h}) }

// CanRewrite reports whether the engine can give a segment back changed and send
// segments of its own (its Sink is a ModifySink). Actions that rewrite pass segments
// unchanged when it cannot, rather than half doing their job.
func (c *Context) CanRewrite() bool { return c.e.msink != nil }

// PassModified accepts the segment now with data in its place: a whole IP packet with
// correct lengths and checksums (package mutate makes them). Its record says Modified,
// and describes the segment as it left. With a Sink that cannot modify (not a
// ModifySink) the segment is accepted unchanged and the failure logged.
func (c *Context) PassModified(data []byte) {
	c.decide(decision{kind: decidePass, out: data})
}

// DropMerged drops the segment because another segment now carries what it carried (it
// was merged into it): counted as Merged instead of Dropped.
func (c *Context) DropMerged() { c.decide(decision{kind: decideMerged}) }

// Held is a segment held by a rule (Context.Held).
type Held struct{ it *pending }

// Seg is the held segment, as it was queued.
func (h Held) Seg() segment.Segment { return h.it.seg }

// Data is a copy of the held segment's bytes, as they would leave, when its Hold asked
// for it (KeepData); nil otherwise.
func (h Held) Data() []byte { return h.it.data }

// Since is when the segment was queued.
func (h Held) Since() time.Time { return h.it.queued }

// Held returns the segments this rule holds on this connection, in the order they were
// held.
func (c *Context) Held() []Held {
	var out []Held
	for _, it := range c.Conn.held {
		if it.rule == c.ri && !it.done && !slices.ContainsFunc(c.dec.releases, func(r release) bool { return r.it == it }) {
			out = append(out, Held{it})
		}
	}
	return out
}

// Release gives a held segment (from Held) its verdict now, before the current segment's.
func (c *Context) Release(h Held, v Verdict) {
	c.dec.releases = append(c.dec.releases, release{it: h.it, v: v})
}

// ReleaseModified accepts a held segment (from Held) now with data in its place, before
// the current segment's verdict (see PassModified).
func (c *Context) ReleaseModified(h Held, data []byte) {
	c.dec.releases = append(c.dec.releases, release{it: h.it, v: Accept, out: data})
}

// Injection is a segment finproxy makes and sends itself (Context.Inject): through a raw
// socket whose packets finproxy's own hooks skip. It never passes through the rules.
type Injection struct {
	// Data is the whole IP packet (mutate.Build, mutate.Reset, or a copy of a segment);
	// the engine keeps it as is.
	Data []byte
	// Delay sends it this long after the decision; 0 right after the current segment's
	// verdict is given (or decided, for a delayed or held segment).
	Delay time.Duration
	// Until, when set, sends it once Until holds for the current connection of the
	// segment's 4-tuple (Delay after that): checked at once, then after every later
	// segment of that 4-tuple has been handled (its verdict given, or its delay or hold
	// started), whatever its incarnation (the Conn handed in is the one that segment
	// belongs to, so a replay can wait for the next incarnation). Timeout (not positive:
	// DefaultHoldTimeout) gives up: the segment is then sent only if SendOnTimeout.
	Until         func(c *Conn) bool
	Timeout       time.Duration
	SendOnTimeout bool
	// Make, when set, makes the segment when it is sent, from the connection as it is
	// then (the current one of the 4-tuple), in place of Data: a RST sent later needs the
	// sequence numbers of that time. Nil bytes send nothing; so does an error (logged).
	Make func(c *Conn) ([]byte, error)
	// Restart: the injections of the same rule on the same connection made with Restart
	// and not sent yet are dropped when the rule decides these (a timer that starts again).
	Restart bool
}

// Inject sends a segment finproxy made, as in says. Its record (one when it is sent:
// Injected, ID 0, Out the bytes) says which rule made it; its verdict is accept, or drop
// when sending failed (logged).
func (c *Context) Inject(in Injection) { c.dec.injects = append(c.dec.injects, in) }

// RewriteClientPort makes the connection's client appear to the server with port: from
// this segment on, every segment the client sends on the connection leaves with port as
// its source port, and every segment the server sends to the client's address at port is
// taken as this connection's (its rules, its phases, its records) and leaves addressed to
// the client's real port. Both are recorded as Modified. Use it on the client's SYN, so
// that the server sees one connection (the tuple of a socket in TIME_WAIT, for example).
// It lasts as long as the connection is tracked.
func (c *Context) RewriteClientPort(port uint16) { c.dec.clientPort = port }

// ModifySink is a Sink that can also accept a segment with new contents and send
// segments finproxy made. Actions that rewrite or inject need one; with a plain Sink
// their rewritten segments pass unchanged and their injections fail (logged).
type ModifySink interface {
	Sink
	// AcceptModified accepts packet id with data in its place.
	AcceptModified(id uint32, data []byte) error
	// Inject sends data, a whole IP packet, on its way (a raw socket).
	Inject(data []byte) error
}

// Injecting is implemented by actions that send segments of their own (Context.Inject):
// the runner then opens its raw sockets before the hooks go in.
type Injecting interface {
	Injects() bool
}

// Injects reports whether an action of c sends segments of its own.
func (c *Config) Injects() bool {
	for _, r := range c.Rules {
		if in, ok := r.Action.(Injecting); ok && in.Injects() {
			return true
		}
	}
	return false
}

// Acted is how many times the rule acted on this connection, this segment included
// (since the rules were last replaced).
func (c *Context) Acted() uint32 { return c.Conn.rules[c.ri].acted }

// RuleVar is a number the rule keeps on this connection for its action, zero at first
// (and again when the rules are replaced): a pace's next free time, a cut's progress.
func (c *Context) RuleVar() *int64 { return &c.Conn.rules[c.ri].v }

// Rand is the engine's random generator, seeded with Config.Seed: draw from it, never
// from a global one, so that runs repeat.
func (c *Context) Rand() *rand.Rand { return c.e.rng }

// Now is the engine clock's current time.
func (c *Context) Now() time.Time { return c.e.clock.Now() }

// Logger is the engine's logger.
func (c *Context) Logger() *slog.Logger { return c.e.logger }

// paramError is an action parameter's problem; the loader places it at the parameter.
type paramError struct{ param, msg string }

func (e paramError) Error() string { return e.param + ": " + e.msg }

// Param names the parameter.
func (e paramError) Param() string { return e.param }
