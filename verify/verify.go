package verify

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
)

// Input is what a run produced, and what it must have shown.
type Input struct {
	Expect *config.Expect
	// Conn is the connection under test (see PickConnection); nil when none was observed.
	Conn *observe.Connection
	// Leaks are the CLOSE_WAIT leaks the observer reported, with threshold
	// Expect.LeakThreshold (observe.Observer.Leaks).
	Leaks []observe.Leak
	// Records is the event log of the run: every segment finproxy saw, of every connection.
	Records []rules.Record
	// ClientExit and ServerExit are the applications' exit codes, -1 when unknown.
	ClientExit, ServerExit int
	// ClientCounters and ServerCounters are how much each side's kernel TCP counters
	// changed during the run (nstat's names; nil when they could not be read).
	ClientCounters, ServerCounters map[string]int64
	// Incarnations are the connections observed on Conn's 4-tuple, Conn among them, in
	// the order of their incarnation numbers (for incarnations and [[expect.connection]]).
	Incarnations []*observe.Connection
	// ClientStop and ServerStop say how the lab stopped an application that was still
	// running (empty when it exited by itself): "SIGTERM, exit status 0".
	ClientStop, ServerStop string
}

// Check returns the expectations of in.Expect that the run did not meet, one line each, in
// the order of the keys' documentation: the client's, the server's, then the segment
// counts in the order written. It returns nil when every expectation holds (and when
// in.Expect is nil).
//
// What each expectation means against the observation:
//
//   - states: the listed states occur in this order in the side's States (a subsequence).
//   - absent: none of them occurs in States.
//   - retransmits_in: for each state, at least one of the side's Retransmits was in it.
//   - no_retransmits: the side has no Retransmits.
//   - resets_sent, resets_received: the side's ResetsSent, ResetsReceived are (not) empty.
//   - max_dwell: no stay in the state is longer than the limit (an ongoing stay counts as
//     far as it went); min_dwell: the state was entered and its longest stay (ongoing
//     ones count) is at least the limit.
//   - close_wait_leak: in.Leaks has (true) or has not (false) an entry for the side's
//     socket (its local address is the side's, its remote the peer's).
//   - exit: ClientExit for the client, ServerExit for the server, for an application
//     that exited by itself; exit = "stopped": ClientStop or ServerStop is not empty
//     (the lab stopped it).
//   - incarnations: the number of in.Incarnations.
//   - [[expect.connection]]: the side expectations above, of the incarnation of that
//     number in in.Incarnations (which must be there).
//   - [expect.kernel]: how much each named counter of the side's kernel changed (a
//     counter that did not change counts 0), within the bounds.
//   - [[expect.segment]]: the number of in.Records that config.SegmentExpect.Matches is
//     within Min and Max.
//
// Without a connection (in.Conn nil), one line says which expectations could not be
// checked; exit codes and segment counts are checked all the same.
func Check(in Input) []string {
	e := in.Expect
	if e == nil {
		return nil
	}
	var c checker
	if in.Conn == nil {
		var need []string
		for _, s := range []struct {
			name string
			se   *config.SideExpect
		}{{"client", e.Client}, {"server", e.Server}} {
			for _, k := range needsConn(s.se, len(in.Leaks) == 0) {
				need = append(need, s.name+" "+k)
			}
		}
		if len(need) > 0 {
			c.failf("connection: want one between the client and the server; none was observed, so %s cannot be checked", strings.Join(need, ", "))
		}
	}
	if e.Client != nil {
		c.side("client", false, e, e.Client, in, in.ClientExit, in.ClientStop)
	}
	if e.Server != nil {
		c.side("server", true, e, e.Server, in, in.ServerExit, in.ServerStop)
	}
	if e.Incarnations > 0 && in.Conn != nil && len(in.Incarnations) != e.Incarnations {
		c.failf("incarnations: want %d connections on the 4-tuple %v → %v; saw %d", e.Incarnations, in.Conn.Client.Addr, in.Conn.Server.Addr, len(in.Incarnations))
	}
	for _, ce := range e.Connections {
		c.connection(e, ce, in)
	}
	for _, s := range e.Segments {
		c.segment(s, in.Records)
	}
	for i := range e.Kernel {
		c.kernel(&e.Kernel[i], in)
	}
	return c.fails
}

// needsConn lists the keys of se that need the connection to be checked. close_wait_leak
// = false holds without one when no leak at all was reported.
func needsConn(se *config.SideExpect, noLeaks bool) []string {
	if se == nil {
		return nil
	}
	var keys []string
	add := func(k string, given bool) {
		if given {
			keys = append(keys, k)
		}
	}
	add("states", len(se.States) > 0)
	add("absent", len(se.Absent) > 0)
	add("retransmits_in", len(se.RetransmitsIn) > 0)
	add("no_retransmits", se.NoRetransmits)
	add("resets_sent", se.ResetsSent != nil)
	add("resets_received", se.ResetsReceived != nil)
	add("max_dwell", len(se.MaxDwell) > 0)
	add("min_dwell", len(se.MinDwell) > 0)
	add("close_wait_leak", se.CloseWaitLeak != nil && (*se.CloseWaitLeak || !noLeaks))
	return keys
}

type checker struct {
	fails []string
}

func (c *checker) failf(format string, args ...any) {
	c.fails = append(c.fails, fmt.Sprintf(format, args...))
}

// side checks the expectations of one side (name is "client" or "server").
// connection checks the expectations of one incarnation.
func (c *checker) connection(e *config.Expect, ce *config.ConnExpect, in Input) {
	name := fmt.Sprintf("incarnation %d", ce.Incarnation)
	var conn *observe.Connection
	for _, x := range in.Incarnations {
		if x.Incarnation == ce.Incarnation {
			conn = x
		}
	}
	if conn == nil {
		if in.Conn == nil {
			c.failf("%s: not observed: no connection between the client and the server was", name)
		} else {
			c.failf("%s: not observed: %d connections on the 4-tuple %v → %v", name, len(in.Incarnations), in.Conn.Client.Addr, in.Conn.Server.Addr)
		}
		return
	}
	sub := in
	sub.Conn = conn
	if ce.Client != nil {
		c.side(name+" client", false, e, ce.Client, sub, 0, "")
	}
	if ce.Server != nil {
		c.side(name+" server", true, e, ce.Server, sub, 0, "")
	}
}

func (c *checker) side(name string, server bool, e *config.Expect, se *config.SideExpect, in Input, exit int, stop string) {
	if in.Conn != nil {
		s, peer := &in.Conn.Client, &in.Conn.Server
		if server {
			s, peer = peer, s
		}
		seen := states(s)
		c.order(name, se.States, seen)
		c.absent(name, se.Absent, seen)
		c.retransmits(name, se, s)
		c.resets(name, "sent", se.ResetsSent, s.ResetsSent, s)
		c.resets(name, "received", se.ResetsReceived, s.ResetsReceived, s)
		for _, d := range se.MaxDwell {
			c.maxDwell(name, d, s)
		}
		for _, d := range se.MinDwell {
			c.minDwell(name, d, s)
		}
		if se.CloseWaitLeak != nil {
			c.leak(name, *se.CloseWaitLeak, e.LeakThreshold, s, peer, in.Leaks)
		}
	}
	if se.ExitStopped && stop == "" {
		if exit < 0 {
			c.failf("%s exit: want stopped by the lab; saw no exit status (unknown)", name)
		} else {
			c.failf("%s exit: want stopped by the lab; it exited by itself with %d", name, exit)
		}
	}
	if se.Exit != nil {
		switch {
		case stop != "":
			c.failf("%s exit: want %d; it was still running when the scenario was over: stopped by the lab (%s)", name, *se.Exit, stop)
		case exit < 0:
			c.failf("%s exit: want %d; saw no exit status (unknown)", name, *se.Exit)
		case exit != *se.Exit:
			c.failf("%s exit: want %d; saw %d", name, *se.Exit, exit)
		}
	}
}

// states returns the states a side entered, in order. NEW_SYN_RECV (a request socket)
// reads as SYN_RECV, as in the config.
func states(s *observe.Side) []observe.State {
	out := make([]observe.State, len(s.States))
	for i, e := range s.States {
		out[i] = norm(e.State)
	}
	return out
}

func norm(s observe.State) observe.State {
	if s == observe.NewSynRecv {
		return observe.SynRecv
	}
	return s
}

// parseStates converts config state names; the config loader has checked them.
func parseStates(names []string) ([]observe.State, error) {
	out := make([]observe.State, len(names))
	for i, n := range names {
		s, err := observe.ParseState(n)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

func arrows(ss []observe.State) string {
	if len(ss) == 0 {
		return "no state"
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, " → ")
}

// order checks that want is a subsequence of seen.
func (c *checker) order(name string, wantNames []string, seen []observe.State) {
	if len(wantNames) == 0 {
		return
	}
	want, err := parseStates(wantNames)
	if err != nil {
		c.failf("%s states: %v", name, err)
		return
	}
	i := 0
	for _, s := range seen {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	if i == len(want) {
		return
	}
	wantText := arrows(want) + " in order"
	if len(want) == 1 {
		wantText = arrows(want)
	}
	missing := want[i]
	var why string
	switch {
	case i == 0:
		why = fmt.Sprintf("no %s", missing)
	case slices.Contains(seen, missing):
		why = fmt.Sprintf("%s only before %s", missing, want[i-1])
	default:
		why = fmt.Sprintf("no %s after %s", missing, want[i-1])
	}
	c.failf("%s states: want %s; saw %s (%s)", name, wantText, arrows(seen), why)
}

// absent checks that no state of absent was entered.
func (c *checker) absent(name string, absentNames []string, seen []observe.State) {
	if len(absentNames) == 0 {
		return
	}
	absent, err := parseStates(absentNames)
	if err != nil {
		c.failf("%s absent: %v", name, err)
		return
	}
	var hit []string
	for _, s := range absent {
		if slices.Contains(seen, s) && !slices.Contains(hit, s.String()) {
			hit = append(hit, s.String())
		}
	}
	if len(hit) > 0 {
		c.failf("%s states: want no %s; saw %s", name, strings.Join(hit, " or "), arrows(seen))
	}
}

// retransmitSummary describes retransmissions: "none", or "2 in FIN_WAIT1, 1 in LAST_ACK"
// in the order of their first occurrence.
func retransmitSummary(rs []observe.RetransmitEntry) string {
	if len(rs) == 0 {
		return "none"
	}
	var order []observe.State
	n := map[observe.State]int{}
	for _, r := range rs {
		s := norm(r.State)
		if n[s] == 0 {
			order = append(order, s)
		}
		n[s]++
	}
	parts := make([]string, len(order))
	for i, s := range order {
		parts[i] = fmt.Sprintf("%d in %s", n[s], s)
	}
	return strings.Join(parts, ", ")
}

func (c *checker) retransmits(name string, se *config.SideExpect, s *observe.Side) {
	if se.NoRetransmits && len(s.Retransmits) > 0 {
		c.failf("%s retransmits: want none; saw %s", name, retransmitSummary(s.Retransmits))
	}
	want, err := parseStates(se.RetransmitsIn)
	if err != nil {
		c.failf("%s retransmits: %v", name, err)
		return
	}
	for _, st := range want {
		found := slices.ContainsFunc(s.Retransmits, func(r observe.RetransmitEntry) bool { return norm(r.State) == st })
		if !found {
			c.failf("%s retransmits: want one in %s; saw %s", name, st, retransmitSummary(s.Retransmits))
		}
	}
}

// stateAt returns the state s was in at t (the last state entered at or before t).
func stateAt(s *observe.Side, t time.Time) (observe.State, bool) {
	var st observe.State
	found := false
	for _, e := range s.States {
		if e.At.After(t) {
			break
		}
		st, found = norm(e.State), true
	}
	return st, found
}

// resetText describes one reset: where the side was and why it was sent.
func resetText(s *observe.Side, r observe.ResetEntry, sent bool) string {
	var parts []string
	switch {
	case r.State != observe.Unknown:
		parts = append(parts, "in "+norm(r.State).String())
	case sent:
		parts = append(parts, "without a socket")
	default:
		if st, ok := stateAt(s, r.At); ok {
			parts = append(parts, "in "+st.String())
		}
	}
	if r.Reason != "" {
		parts = append(parts, "reason "+r.Reason)
	}
	return strings.Join(parts, ", ")
}

func (c *checker) resets(name, dir string, want *bool, got []observe.ResetEntry, s *observe.Side) {
	if want == nil || *want == (len(got) > 0) {
		return
	}
	if *want {
		c.failf("%s resets %s: want at least one; saw none", name, dir)
		return
	}
	descr := make([]string, 0, len(got))
	for _, r := range got {
		if t := resetText(s, r, dir == "sent"); t != "" {
			descr = append(descr, t)
		}
	}
	detail := ""
	if len(descr) > 0 {
		detail = " (" + strings.Join(descr, "; ") + ")"
	}
	c.failf("%s resets %s: want none; saw %d%s", name, dir, len(got), detail)
}

// longestStay returns the longest stay of s in st, and whether that stay is ongoing;
// entered is false when s never entered st.
func longestStay(s *observe.Side, st observe.State) (d time.Duration, ongoing, entered bool) {
	for _, e := range s.States {
		if norm(e.State) != st {
			continue
		}
		if !entered || time.Duration(e.Dwell) > d {
			d, ongoing = time.Duration(e.Dwell), e.Ongoing
		}
		entered = true
	}
	return d, ongoing, entered
}

func stayText(d time.Duration, ongoing bool) string {
	if ongoing {
		return dur(d) + " and still there"
	}
	return dur(d)
}

func (c *checker) maxDwell(name string, lim config.Dwell, s *observe.Side) {
	st, err := observe.ParseState(lim.State)
	if err != nil {
		c.failf("%s dwell: %v", name, err)
		return
	}
	d, ongoing, entered := longestStay(s, st)
	if entered && d > lim.Limit {
		c.failf("%s dwell in %s: want at most %s; saw %s", name, st, dur(lim.Limit), stayText(d, ongoing))
	}
}

func (c *checker) minDwell(name string, lim config.Dwell, s *observe.Side) {
	st, err := observe.ParseState(lim.State)
	if err != nil {
		c.failf("%s dwell: %v", name, err)
		return
	}
	d, ongoing, entered := longestStay(s, st)
	switch {
	case !entered:
		c.failf("%s dwell in %s: want at least %s; never entered (saw %s)", name, st, dur(lim.Limit), arrows(states(s)))
	case d < lim.Limit:
		c.failf("%s dwell in %s: want at least %s; saw %s", name, st, dur(lim.Limit), stayText(d, ongoing))
	}
}

// sameAddr compares two endpoints, IPv4-mapped IPv6 addresses as IPv4.
func sameAddr(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

func (c *checker) leak(name string, want bool, threshold time.Duration, s, peer *observe.Side, leaks []observe.Leak) {
	i := slices.IndexFunc(leaks, func(l observe.Leak) bool {
		return sameAddr(l.Local, s.Addr) && (!peer.Addr.IsValid() || sameAddr(l.Remote, peer.Addr))
	})
	switch {
	case want && i < 0:
		seen := "never in CLOSE_WAIT"
		if d, ongoing, entered := longestStay(s, observe.CloseWait); entered {
			seen = "in CLOSE_WAIT for " + stayText(d, ongoing)
		}
		c.failf("%s close_wait_leak: want the socket reported (in CLOSE_WAIT for %s or more); saw no report (%s)", name, dur(threshold), seen)
	case !want && i >= 0:
		l := leaks[i]
		owner := ""
		if l.Owner != nil {
			owner = fmt.Sprintf(", held by %s (pid %d)", l.Owner.Comm, l.Owner.Pid)
		}
		c.failf("%s close_wait_leak: want no report; saw %s in CLOSE_WAIT for %s%s", name, l.Local, dur(time.Duration(l.Age)), owner)
	}
}

// segment checks one [[expect.segment]].
func (c *checker) segment(s *config.SegmentExpect, records []rules.Record) {
	n := 0
	for i := range records {
		if s.Matches(&records[i]) {
			n++
		}
	}
	if n >= s.Min && (s.Max < 0 || n <= s.Max) {
		return
	}
	c.failf("segment %s: want %s, saw %d", s, s.CountText(), n)
}

// kernel checks one bound on a kernel counter.
func (c *checker) kernel(k *config.KernelExpect, in Input) {
	counters := in.ClientCounters
	if k.Side == rules.Server {
		counters = in.ServerCounters
	}
	if counters == nil {
		c.failf("kernel %s: want %s; the %s's counters could not be read", k, k.CountText(), k.Side)
		return
	}
	n := counters[k.Counter]
	if n < k.Min || (k.Max >= 0 && n > k.Max) {
		c.failf("kernel %s: want %s; saw %+d", k, k.CountText(), n)
	}
}

// dur writes a duration for messages: to the microsecond below a second, to the
// millisecond below a minute, to the second above.
func dur(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Microsecond).String()
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// PickConnection chooses the connection of a run among r.Connections: those whose server
// side is server and whose client side is client, where an invalid address or a zero
// port matches any (the client's port is usually ephemeral: pass its address with port
// 0). Addresses compare with IPv4-mapped IPv6 addresses as IPv4.
//
// Of several candidates, it prefers one whose handshake was observed (the client entered
// SYN_SENT, the server SYN_RECV, or a SYN or SYN-ACK was retransmitted): that connection
// started during the run, while one without is a leftover of an earlier one that the
// observer only caught the end of. Among those it takes the one first seen (the first
// incarnation of a reused 4-tuple comes before the next); without any, the one with the
// most observed events (states, retransmissions and resets of both sides), then the first
// seen.
//
// It returns the connection (pointing into r.Connections) and the number of candidates,
// so that a caller can say when the choice was not obvious; nil and 0 when none matched.
func PickConnection(r observe.Report, client, server netip.AddrPort) (*observe.Connection, int) {
	var cands []*observe.Connection
	for i := range r.Connections {
		c := &r.Connections[i]
		if matchAddr(c.Client.Addr, client) && matchAddr(c.Server.Addr, server) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil, 0
	}
	best := slices.MinFunc(cands, func(a, b *observe.Connection) int {
		ha, hb := handshakeSeen(a), handshakeSeen(b)
		if ha != hb {
			if ha {
				return -1
			}
			return 1
		}
		if !ha {
			if n := cmp.Compare(events(b), events(a)); n != 0 {
				return n
			}
		}
		if n := a.FirstSeen.Compare(b.FirstSeen); n != 0 {
			return n
		}
		return cmp.Compare(a.Incarnation, b.Incarnation)
	})
	return best, len(cands)
}

// matchAddr reports whether a is at want, an invalid address or a zero port matching any.
func matchAddr(a, want netip.AddrPort) bool {
	if want.Addr().IsValid() && a.Addr().Unmap() != want.Addr().Unmap() {
		return false
	}
	return want.Port() == 0 || a.Port() == want.Port()
}

func handshakeSeen(c *observe.Connection) bool {
	for _, e := range c.Client.States {
		if e.State == observe.SynSent {
			return true
		}
	}
	for _, e := range c.Server.States {
		if s := norm(e.State); s == observe.SynRecv {
			return true
		}
	}
	for _, s := range []*observe.Side{&c.Client, &c.Server} {
		for _, r := range s.Retransmits {
			if r.SynAck || r.State == observe.SynSent {
				return true
			}
		}
	}
	return false
}

func events(c *observe.Connection) int {
	n := 0
	for _, s := range []*observe.Side{&c.Client, &c.Server} {
		n += len(s.States) + len(s.Retransmits) + len(s.ResetsSent) + len(s.ResetsReceived)
	}
	return n
}
