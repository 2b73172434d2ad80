package rules

import (
	"log/slog"
	"math/rand/v2"
	"time"
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
	dec decision
}

type decisionKind uint8

const (
	decideNone decisionKind = iota
	decidePass
	decideDrop
	decideDelay
	decideHold
)

type decision struct {
	kind  decisionKind
	delay time.Duration
	hold  Hold
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
}

func (c *Context) decide(d decision) {
	if c.dec.kind != decideNone {
		panic("rules: an action decided twice on one segment")
	}
	c.dec = d
}

// Pass accepts the segment now.
func (c *Context) Pass() { c.decide(decision{kind: decidePass}) }

// Drop drops the segment now.
func (c *Context) Drop() { c.decide(decision{kind: decideDrop}) }

// Delay accepts the segment after d (not positive: now; counted as delayed either way).
func (c *Context) Delay(d time.Duration) { c.decide(decision{kind: decideDelay, delay: d}) }

// Hold keeps the segment as h says.
func (c *Context) Hold(h Hold) { c.decide(decision{kind: decideHold, hold: h}) }

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
