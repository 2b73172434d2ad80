package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/tcpstate"
)

// Expect is the [expect] section of a config: what must be observed on the real sockets
// of a run (and, in [[expect.segment]], in the event log) for the scenario to pass. It is
// checked against what the observer saw, never against what the rules intended; package
// verify does that.
type Expect struct {
	// LeakThreshold is how long a socket must stay in CLOSE_WAIT to be reported as a leak
	// (for SideExpect.CloseWaitLeak).
	LeakThreshold time.Duration
	// Client and Server are the expectations of each side (nil: none).
	Client *SideExpect
	Server *SideExpect
	// Segments are the checks on the event log, in the order written.
	Segments []*SegmentExpect
	// Incarnations, when not 0, is how many connections the run's 4-tuple must have
	// carried (a SYN on a 4-tuple whose previous connection is over starts the next).
	Incarnations int
	// Kernel are bounds on the kernel's TCP counters of each side ([expect.kernel]).
	Kernel []KernelExpect
	// Connections are expectations of one incarnation each ([[expect.connection]]);
	// Client and Server above are those of the connection the run is judged on, the
	// first.
	Connections []*ConnExpect
	// Pos is where the [expect] table starts.
	Pos rules.Position
}

// ConnExpect is what must be observed of one incarnation of the run's 4-tuple.
type ConnExpect struct {
	// Incarnation is the connection's number on its 4-tuple, from 1.
	Incarnation int
	// Client and Server are its sides' expectations (nil: none); exit does not apply.
	Client, Server *SideExpect
	Pos            rules.Position
}

// DefaultLeakThreshold is Expect.LeakThreshold when leak_threshold is not given.
const DefaultLeakThreshold = time.Second

// SideExpect is what must be observed of one side's socket. Zero values expect nothing.
// States are kernel names as in TCPStates.
type SideExpect struct {
	// States must appear in this order among the states the side entered (a subsequence:
	// other states may come before, between and after them).
	States []string
	// Absent must never be entered.
	Absent []string
	// RetransmitsIn: at least one retransmission must be seen in each of these states.
	RetransmitsIn []string
	// NoRetransmits: no retransmission at all.
	NoRetransmits bool
	// ResetsSent and ResetsReceived: true, at least one; false, none; nil, either.
	ResetsSent     *bool
	ResetsReceived *bool
	// MaxDwell: the side must not stay longer than Limit in State, if it enters it (each
	// stay, the ongoing one included). MinDwell: the side must enter State and stay there
	// at least Limit (its longest stay; the ongoing one counts). In the order written.
	MaxDwell []Dwell
	MinDwell []Dwell
	// CloseWaitLeak: true, the leak detector must report this side's socket (in
	// CLOSE_WAIT for Expect.LeakThreshold or more); false, it must not; nil, either.
	CloseWaitLeak *bool
	// Exit is the application's exit code (the client program for the client side, the
	// server program for the server side) when it exited by itself; nil, any.
	// ExitStopped (exit = "stopped") expects instead that the lab stopped it: it was
	// still running when the scenario was over (a daemon that never exits by itself).
	Exit        *int
	ExitStopped bool
	// Pos is where the side's table starts.
	Pos rules.Position
}

// ExitStoppedWord is the value of exit that expects the lab to have stopped the
// application.
const ExitStoppedWord = "stopped"

// Dwell is a time limit on a state.
type Dwell struct {
	State string
	Limit time.Duration
}

// SegmentExpect is a count of event log records. A record counts when it satisfies
// Match's side, flags, pure-ACK, has-flags and payload conditions, and Verdict, Rule,
// Injected and Modified when set.
type SegmentExpect struct {
	Match   rules.Match
	Verdict *rules.Verdict
	// Rule is the name of the rule that must have acted on the segment ("" any or none).
	Rule string
	// Injected: true, only segments finproxy made (Record.Injected); false, only queued
	// ones; nil, both. Modified likewise for segments that left rewritten.
	Injected *bool
	Modified *bool
	// Min and Max bound the count; Max is -1 for no bound.
	Min, Max int
	// Pos is where the expectation's table starts.
	Pos rules.Position
}

// TCPStates are the state names [expect] takes: the kernel's, in the order a connection
// goes through them (tcpstate.Expectable).
var TCPStates = tcpstate.ExpectableNames()

// noRetransmitStates are the states no socket retransmits in: nothing unacknowledged
// (FIN_WAIT2, TIME_WAIT: a timewait socket re-acknowledges a FIN, which is no
// retransmission) or nothing sent (LISTEN, CLOSE).
var noRetransmitStates = map[string]string{
	"LISTEN":    "a listener sends nothing of its own",
	"FIN_WAIT2": "everything it sent, its FIN included, is acknowledged",
	"TIME_WAIT": "a timewait socket only re-acknowledges a FIN, which is not a retransmission",
	"CLOSE":     "a closed socket sends nothing",
}

var (
	expectKeys        = []string{"leak_threshold", "client", "server", "segment", "incarnations", "connection", "kernel"}
	connExpectKeys    = []string{"incarnation", "client", "server"}
	sideExpectKeys    = []string{"states", "absent", "retransmits_in", "no_retransmits", "resets_sent", "resets_received", "max_dwell", "min_dwell", "close_wait_leak", "exit"}
	segmentExpectKeys = []string{"side", "flags", "has_flags", "payload", "verdict", "rule", "injected", "modified", "min", "max"}
)

// CountText says what count s wants: "none", "exactly 1", "at least 2", "at most 3",
// "1 to 4".
func (s *SegmentExpect) CountText() string {
	lo, hi := s.Min, s.Max
	switch {
	case hi == 0:
		return "none"
	case hi < 0:
		return fmt.Sprintf("at least %d", lo)
	case lo == hi:
		return fmt.Sprintf("exactly %d", lo)
	case lo == 0:
		return fmt.Sprintf("at most %d", hi)
	}
	return fmt.Sprintf("%d to %d", lo, hi)
}

// Matches reports whether the record r counts for s.
func (s *SegmentExpect) Matches(r *rules.Record) bool {
	seg := segment.Segment{Flags: r.Flags, Seq: r.Seq, Ack: r.Ack, PayloadLen: r.Len}
	if !s.Match.Matches(r.Side, &seg, 0) {
		return false
	}
	if s.Verdict != nil && r.Verdict != *s.Verdict {
		return false
	}
	if s.Injected != nil && r.Injected != *s.Injected {
		return false
	}
	if s.Modified != nil && r.Modified != *s.Modified {
		return false
	}
	return s.Rule == "" || r.Rule == s.Rule
}

// String describes which records s counts, for messages: "client has FIN verdict drop",
// "server flags FIN|ACK with data rule merge-ack", "any".
func (s *SegmentExpect) String() string {
	var parts []string
	m := &s.Match
	if m.Side != rules.AnySide {
		parts = append(parts, m.Side.String())
	}
	switch {
	case m.PureACK:
		parts = append(parts, "pure-ack")
	case m.FlagsSet:
		parts = append(parts, "flags "+m.Flags.String())
	}
	if m.HasFlags != 0 {
		parts = append(parts, "has "+m.HasFlags.String())
	}
	switch {
	case m.Payload > 0:
		parts = append(parts, "with data")
	case m.Payload < 0 && !m.PureACK:
		parts = append(parts, "without data")
	}
	if s.Verdict != nil {
		parts = append(parts, "verdict "+s.Verdict.String())
	}
	if s.Rule != "" {
		parts = append(parts, "rule "+s.Rule)
	}
	for _, b := range []struct {
		v    *bool
		name string
	}{{s.Injected, "injected"}, {s.Modified, "modified"}} {
		switch {
		case b.v == nil:
		case *b.v:
			parts = append(parts, b.name)
		default:
			parts = append(parts, "not "+b.name)
		}
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, " ")
}

// Loading.

func (l *loader) loadExpect(p tomlpos.Path, v toml.Primitive) {
	tbl, ok := l.table(p, v)
	if !ok {
		return
	}
	lc := l.loc.At(p)
	e := &Expect{LeakThreshold: DefaultLeakThreshold, Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
	l.cfg.Expect = e
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "leak_threshold":
			if d, ok := l.duration(kp, v); ok {
				if d == 0 {
					l.valErr(kp, "must be more than 0 (leave it out for %s)", DefaultLeakThreshold)
				} else {
					e.LeakThreshold = d
				}
			}
		case "client":
			e.Client = l.sideExpect(kp, v)
		case "server":
			e.Server = l.sideExpect(kp, v)
		case "segment":
			tbls, ok := l.tables(kp, v)
			if !ok {
				break
			}
			for i, t := range tbls {
				e.Segments = append(e.Segments, l.segmentExpect(kp.Index(i+1), t))
			}
		case "kernel":
			e.Kernel = l.loadKernelExpect(kp, v)
		case "incarnations":
			if n, ok := l.count(kp, v, "the number of connections on the run's 4-tuple"); ok {
				e.Incarnations = n
			}
		case "connection":
			tbls, ok := l.tables(kp, v)
			if !ok {
				break
			}
			seen := map[int]tomlpos.Path{}
			for i, t := range tbls {
				if c := l.connExpect(kp.Index(i+1), t, seen); c != nil {
					e.Connections = append(e.Connections, c)
				}
			}
		default:
			l.unknownKey(kp, k, expectKeys)
		}
	}
	if e.Incarnations > 0 {
		for i, c := range e.Connections {
			if c.Incarnation > e.Incarnations {
				l.valErr(p.Key("connection").Index(i+1).Key("incarnation"), "incarnation %d, but incarnations = %d: the expectation can never hold", c.Incarnation, e.Incarnations)
			}
		}
	}
}

// maxIncarnation bounds [[expect.connection]] incarnation: a lab run makes a few
// connections on one 4-tuple, not thousands.
const maxIncarnation = 1000

func (l *loader) connExpect(p tomlpos.Path, tbl map[string]toml.Primitive, seen map[int]tomlpos.Path) *ConnExpect {
	lc := l.loc.At(p)
	c := &ConnExpect{Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "incarnation":
			n, ok := l.count(kp, v, "the connection's number on its 4-tuple: 1 is the first")
			if !ok {
				break
			}
			if n > maxIncarnation {
				l.valErr(kp, "%d is out of range: want 1 to %d", n, maxIncarnation)
				break
			}
			if prev, dup := seen[n]; dup {
				l.valErr(kp, "incarnation %d has expectations already (at line %d): write them in one table", n, l.loc.At(prev).Line)
				break
			}
			seen[n] = kp
			c.Incarnation = n
		case "client", "server":
			se := l.sideExpect(kp, v)
			if se != nil && (se.Exit != nil || se.ExitStopped) {
				l.keyErr(kp.Key("exit"), "exit is the application's, not a connection's: write it in [expect.%s]", k)
			}
			if k == "client" {
				c.Client = se
			} else {
				c.Server = se
			}
		default:
			l.unknownKey(kp, k, connExpectKeys)
		}
	}
	if _, ok := tbl["incarnation"]; !ok {
		l.keyErr(p, "missing incarnation (the connection's number on the run's 4-tuple, such as 2 for the second)")
		return nil
	}
	if c.Incarnation == 0 {
		return nil
	}
	return c
}

// checkExpect checks what [expect] says of the rest of the config: the rules it names.
func (l *loader) checkExpect() {
	e := l.cfg.Expect
	if e == nil {
		return
	}
	var names []string
	for _, r := range l.cfg.Rules {
		if r.Name != "" {
			names = append(names, r.Name)
		}
	}
	for i, s := range e.Segments {
		if s.Rule == "" || slices.Contains(names, s.Rule) {
			continue
		}
		p := tomlpos.Path{"expect", "segment"}.Index(i + 1).Key("rule")
		switch sug := tomlpos.Suggest(s.Rule, names); {
		case len(names) == 0:
			l.valErr(p, "no rule named %q: the config has no [[rule]]", s.Rule)
		case sug != "":
			l.valErr(p, "no rule named %q (did you mean %s?)", s.Rule, sug)
		default:
			l.valErr(p, "no rule named %q (rules: %s)", s.Rule, strings.Join(names, ", "))
		}
	}
}

func (l *loader) boolean(p tomlpos.Path, v toml.Primitive) (bool, bool) {
	raw := l.raw(v)
	b, ok := raw.(bool)
	if !ok {
		l.typeErr(p, "a boolean (true or false)", raw)
	}
	return b, ok
}

// state checks a state name; p is where it is written (as a value, or as a key when isKey).
func (l *loader) state(p tomlpos.Path, s string, isKey bool) bool {
	if slices.Contains(TCPStates, s) {
		return true
	}
	report := l.valErr
	if isKey {
		report = l.keyErr
	}
	list := strings.Join(TCPStates, ", ")
	if sug := tomlpos.Suggest(s, TCPStates); sug != "" {
		report(p, "unknown state %q (did you mean %s? states are %s)", s, sug, list)
	} else {
		report(p, "unknown state %q (states are %s)", s, list)
	}
	return false
}

// stateList reads a state name or a list of them; it returns the valid ones with their paths.
func (l *loader) stateList(p tomlpos.Path, v toml.Primitive) ([]string, []tomlpos.Path, bool) {
	ss, ps, ok := l.strs(p, v)
	if !ok {
		return nil, nil, false
	}
	var (
		out []string
		at  []tomlpos.Path
	)
	for i, s := range ss {
		if l.state(ps[i], s, false) {
			out = append(out, s)
			at = append(at, ps[i])
		} else {
			ok = false
		}
	}
	return out, at, ok
}

// dwells reads a table state -> duration, in the order written.
func (l *loader) dwells(p tomlpos.Path, v toml.Primitive) ([]Dwell, map[string]tomlpos.Path) {
	tbl, ok := l.table(p, v)
	if !ok {
		return nil, nil
	}
	keys := sortedKeys(tbl)
	slices.SortStableFunc(keys, func(a, b string) int {
		la, lb := l.loc.At(p.Key(a)), l.loc.At(p.Key(b))
		if la.Line != lb.Line {
			return la.Line - lb.Line
		}
		return la.Col - lb.Col
	})
	var out []Dwell
	at := map[string]tomlpos.Path{}
	for _, k := range keys {
		kp := p.Key(k)
		if !l.state(kp, k, true) {
			continue
		}
		if d, ok := l.duration(kp, tbl[k]); ok {
			out = append(out, Dwell{State: k, Limit: d})
			at[k] = kp
		}
	}
	if len(keys) == 0 {
		l.valErr(p, "empty table: give at least one state, such as { FIN_WAIT2 = \"10ms\" }, or leave %s out", p[len(p)-1])
	}
	return out, at
}

func (l *loader) sideExpect(p tomlpos.Path, v toml.Primitive) *SideExpect {
	tbl, ok := l.table(p, v)
	if !ok {
		return nil
	}
	lc := l.loc.At(p)
	se := &SideExpect{Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
	var (
		statesAt, absentAt, retransAt []tomlpos.Path
		minAt                         map[string]tomlpos.Path
		noRetransAt, leakAt           tomlpos.Path
	)
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "states":
			se.States, statesAt, _ = l.stateList(kp, v)
		case "absent":
			se.Absent, absentAt, _ = l.stateList(kp, v)
		case "retransmits_in":
			var ss []string
			var ps []tomlpos.Path
			ss, ps, _ = l.stateList(kp, v)
			for i, s := range ss {
				if why, never := noRetransmitStates[s]; never {
					l.valErr(ps[i], "no socket retransmits in %s (%s): the expectation can never hold", s, why)
					continue
				}
				se.RetransmitsIn = append(se.RetransmitsIn, s)
				retransAt = append(retransAt, ps[i])
			}
		case "no_retransmits":
			if b, ok := l.boolean(kp, v); ok {
				se.NoRetransmits = b
				noRetransAt = kp
			}
		case "resets_sent":
			if b, ok := l.boolean(kp, v); ok {
				se.ResetsSent = &b
			}
		case "resets_received":
			if b, ok := l.boolean(kp, v); ok {
				se.ResetsReceived = &b
			}
		case "close_wait_leak":
			if b, ok := l.boolean(kp, v); ok {
				se.CloseWaitLeak = &b
				leakAt = kp
			}
		case "max_dwell":
			se.MaxDwell, _ = l.dwells(kp, v)
		case "min_dwell":
			se.MinDwell, minAt = l.dwells(kp, v)
		case "exit":
			switch raw := l.raw(v).(type) {
			case string:
				if raw != ExitStoppedWord {
					l.valErr(kp, "must be an exit code (an integer, 0 to 255) or %q (the lab stopped it), not the string %q", ExitStoppedWord, raw)
				} else {
					se.ExitStopped = true
				}
			default:
				if n, ok := l.integer(kp, v); ok {
					if n < 0 || n > 255 {
						l.valErr(kp, "%d is out of range: want an exit code, 0 to 255, or %q", n, ExitStoppedWord)
					} else {
						x := int(n)
						se.Exit = &x
					}
				}
			}
		default:
			l.unknownKey(kp, k, sideExpectKeys)
		}
	}

	// Contradictions: the expectation could never hold.
	for i, s := range se.Absent {
		if slices.Contains(se.States, s) {
			l.valErr(absentAt[i], "%s is in states too (at line %d): the expectation can never hold", s, l.loc.At(statesAt[slices.Index(se.States, s)]).Line)
		}
	}
	for i, s := range se.RetransmitsIn {
		if slices.Contains(se.Absent, s) {
			l.valErr(retransAt[i], "a retransmission in %s needs %s, which absent excludes: the expectation can never hold", s, s)
		}
	}
	if se.NoRetransmits && len(se.RetransmitsIn) > 0 {
		l.valErr(noRetransAt, "contradicts retransmits_in (%s): the expectation can never hold", strings.Join(se.RetransmitsIn, ", "))
	}
	for _, d := range se.MinDwell {
		if slices.Contains(se.Absent, d.State) {
			l.valErr(minAt[d.State], "a dwell in %s needs %s, which absent excludes: the expectation can never hold", d.State, d.State)
		}
		for _, m := range se.MaxDwell {
			if m.State == d.State && m.Limit < d.Limit {
				l.valErr(minAt[d.State], "%s is longer than max_dwell %s = %s: the expectation can never hold", d.Limit, d.State, m.Limit)
			}
		}
	}
	if se.CloseWaitLeak != nil && *se.CloseWaitLeak && slices.Contains(se.Absent, "CLOSE_WAIT") {
		l.valErr(leakAt, "a leak is a socket held in CLOSE_WAIT, which absent excludes: the expectation can never hold")
	}
	return se
}

func (l *loader) segmentExpect(p tomlpos.Path, tbl map[string]toml.Primitive) *SegmentExpect {
	lc := l.loc.At(p)
	se := &SegmentExpect{Max: -1, Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
	// side, flags, has_flags and payload read as in a rule.
	rl := &ruleLoad{loader: l, p: p, r: &rules.Rule{}, given: map[string]tomlpos.Path{}}
	var minGiven, maxGiven bool
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "side", "flags", "has_flags", "payload":
			rl.ruleKey(k, kp, v)
		case "verdict":
			if s, ok := l.str(kp, v); ok {
				switch s {
				case "accept", "pass":
					x := rules.Accept
					se.Verdict = &x
				case "drop":
					x := rules.Drop
					se.Verdict = &x
				default:
					l.valErr(kp, "unknown verdict %q (want accept or drop)", s)
				}
			}
		case "rule":
			if s, ok := l.str(kp, v); ok {
				if strings.TrimSpace(s) == "" {
					l.valErr(kp, "must not be empty (leave it out to count segments whatever acted on them)")
				} else {
					se.Rule = s
				}
			}
		case "injected":
			if b, ok := l.boolean(kp, v); ok {
				se.Injected = &b
			}
		case "modified":
			if b, ok := l.boolean(kp, v); ok {
				se.Modified = &b
			}
		case "min", "max":
			n, ok := l.integer(kp, v)
			if !ok {
				break
			}
			if n < 0 || n > math.MaxInt32 {
				l.valErr(kp, "%d is out of range: want a count, 0 or more", n)
				break
			}
			if k == "min" {
				se.Min, minGiven = int(n), true
			} else {
				se.Max, maxGiven = int(n), true
			}
		default:
			l.unknownKey(kp, k, segmentExpectKeys)
		}
	}
	if !minGiven && !maxGiven {
		se.Min = 1 // "such segments were seen"
	}
	if minGiven && maxGiven && se.Min > se.Max {
		l.valErr(p.Key("min"), "min %d is more than max %d: the expectation can never hold", se.Min, se.Max)
	}
	se.Match = rl.r.Match
	m := &se.Match
	const compared = segment.SYN | segment.FIN | segment.RST | segment.PSH | segment.ACK | segment.URG
	if hp, ok := rl.given["has_flags"]; ok {
		if _, ok := rl.given["flags"]; ok {
			switch {
			case m.FlagsSet && m.HasFlags&compared&^m.Flags != 0:
				l.valErr(hp, "%s is not in flags %s: no segment can match", m.HasFlags&compared&^m.Flags, m.Flags)
			case m.PureACK && m.HasFlags&(segment.SYN|segment.FIN|segment.RST) != 0:
				l.valErr(hp, "%s contradicts flags = \"pure-ack\": no segment can match", m.HasFlags&(segment.SYN|segment.FIN|segment.RST))
			}
		}
	}
	if pp, ok := rl.given["payload"]; ok && m.PureACK && rl.payload > 0 {
		l.valErr(pp, "\"some\" contradicts flags = \"pure-ack\" (which carries no payload): no segment can match")
	}
	return se
}
