package rules

import (
	"math/rand/v2"
	"slices"
)

// Replace puts the rules and target of cfg (nil: no rules) in place of the engine's, for
// the next segment handed to Handle: a segment is matched against the old rules or the
// new ones, never a mix, as Handle and Replace take the same lock.
//
// What the engine knows of the connections stays: the tracker's connections, their
// phases, sequence numbers and incarnations, and client port rewrites already under way
// (they go on, credited to the new rule of the same name, if any). What the old rules
// were doing ends: delayed and held segments get their verdict at once (accept, as at
// Close: nothing queued is lost), injections not sent yet are dropped, and the per-rule
// state of every connection (nth, limit) and the counters start again from zero for the
// new rules. The random source is seeded again from cfg's seed.
//
// It returns the old rules' counters, final. After Close, Replace changes nothing and
// returns nil.
func (e *Engine) Replace(cfg *Config) []Counters {
	if cfg == nil {
		cfg = &Config{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.releaseAll("the rules were replaced")
	old := e.counters

	e.setRules(slices.Clone(cfg.Rules))
	e.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), 0))

	// Each rewrite is in the map twice (under both tuples): remap it once.
	remapped := make(map[*rewrite]bool, len(e.rewrites)/2)
	for _, rw := range e.rewrites {
		if remapped[rw] {
			continue
		}
		remapped[rw] = true
		if rw.rule >= 0 && rw.rule < len(old) {
			rw.rule = slices.Index(e.names, old[rw.rule].Rule)
		}
	}
	e.tr.target = cfg.Target
	e.tr.nrules = len(e.rules)
	for _, c := range e.tr.conns {
		c.resetRules(e.tr.nrules)
	}
	return old
}

// resetRules gives c a zeroed per-rule state for n rules.
func (c *Conn) resetRules(n int) {
	if n <= len(c.rulesBuf) {
		c.rulesBuf = [len(c.rulesBuf)]ruleConnState{}
		c.rules = c.rulesBuf[:n]
	} else {
		c.rules = make([]ruleConnState, n)
	}
}

// ruleName names rule ri in logs ("" for -1: a rewrite whose rule was replaced).
func (e *Engine) ruleName(ri int) string {
	if ri < 0 || ri >= len(e.names) {
		return ""
	}
	return e.names[ri]
}
