package rules

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

const (
	fSYN = segment.SYN
	fFIN = segment.FIN
	fRST = segment.RST
	fPSH = segment.PSH
	fACK = segment.ACK
)

// accepted renders ids 1..n from a sequence as plain accepted segments.
func acceptedPrefix(lines []seqLine, n int) []string {
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, fmt.Sprintf("%d %s %s accept", i+1, lines[i].side, lines[i].seg.Flags))
	}
	return out
}

func TestFourWayClose(t *testing.T) {
	lines := loadSeq(t, "four-way-close.txt")
	h := newHarness(t, cfgOf(), Options{})
	h.play(lines)
	h.wantEvents(acceptedPrefix(lines, len(lines))...)
	h.allVerdicts()

	c := h.observed[uint32(len(lines))].conn
	checks := []struct {
		what      string
		got, want any
	}{
		{"client", c.Client(), testClient},
		{"server", c.Server(), testServer},
		{"side of client", c.SideOf(testClient), Client},
		{"side of server", c.SideOf(testServer), Server},
		{"side of stranger", c.SideOf(netip.MustParseAddrPort("10.9.9.9:1")), AnySide},
		{"inferred", c.Inferred(), false},
		{"incarnation", c.Incarnation(), 1},
		{"handshake done", c.HandshakeDone(), true},
		{"client SYN", c.SYNSeen(Client), true},
		{"server SYN", c.SYNSeen(Server), true},
		{"client FIN", c.FINSeen(Client), true},
		{"server FIN", c.FINSeen(Server), true},
		{"client FIN seq", c.FINSeq(Client), uint32(1101)},
		{"server FIN seq", c.FINSeq(Server), uint32(5201)},
		{"client FIN ack", c.FINAck(Client), uint32(5201)},
		{"server FIN ack", c.FINAck(Server), uint32(1102)},
		{"client FIN acked", c.FINAcked(Client), true},
		{"server FIN acked", c.FINAcked(Server), true},
		{"client RST", c.RSTSeen(Client), false},
		{"finished", c.Finished(), true},
		{"client ISN", c.ISN(Client), uint32(1000)},
		{"server ISN", c.ISN(Server), uint32(5000)},
		{"client next seq", c.NextSeq(Client), uint32(1102)},
		{"server next seq", c.NextSeq(Server), uint32(5202)},
		{"client highest ack", c.HighestAck(Client), uint32(5202)},
		{"server highest ack", c.HighestAck(Server), uint32(1102)},
		{"client segments", c.Segments(Client), uint64(6)},
		{"server segments", c.Segments(Server), uint64(5)},
		{"created", c.Created(), t0},
		{"last seen", c.LastSeen(), t0.Add(14 * time.Millisecond)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	// State after the client's FIN: the server's ACK of it is recognised before it is applied.
	if got := h.observed[9].phases; got != PhaseAfterClientFIN|PhaseAckOfClientFIN {
		t.Errorf("phases of the ACK of the client's FIN: %s", got)
	}
	if n := h.eng.Conns(); n != 1 {
		t.Errorf("Conns = %d, want 1", n)
	}
}

func mergeRule(m Match) *Rule {
	return rule("merge-ack", m, "merge", &MergeAction{})
}

func TestMerge(t *testing.T) {
	ackOfClientFIN := Match{Side: Server, PureACK: true, Phases: PhaseAckOfClientFIN}
	tests := []struct {
		name     string
		seq      string
		match    Match
		prefix   int // leading events: ids 1..prefix accepted, in order
		want     []string
		counters Counters
	}{
		{
			name: "three-way close", seq: "three-way-close.txt", match: ackOfClientFIN, prefix: 8,
			want: []string{
				"9 server ACK drop merge-ack/merge held=10ms",
				"10 server FIN|ACK accept",
				"11 client ACK accept",
			},
			counters: Counters{Rule: "merge-ack", Matched: 1, Merged: 1},
		},
		{
			name: "no FIN within the timeout", seq: "half-close.txt", match: ackOfClientFIN, prefix: 4,
			want: []string{
				"6 server PSH|ACK accept",
				"7 client ACK accept",
				"5 server ACK accept merge-ack/merge held=1s",
				"8 server FIN|ACK accept",
				"9 client ACK accept",
			},
			counters: Counters{Rule: "merge-ack", Matched: 1, Passed: 1},
		},
		{
			name: "FIN with another ack", seq: "merge-other-ack.txt", match: Match{Side: Server, PureACK: true}, prefix: 4,
			want: []string{
				"6 client PSH|ACK accept",
				"5 server ACK accept merge-ack/merge held=4ms",
				"7 server ACK drop merge-ack/merge held=2ms",
				"8 server FIN|ACK accept",
				"9 client ACK accept",
			},
			counters: Counters{Rule: "merge-ack", Matched: 2, Passed: 1, Merged: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := loadSeq(t, tt.seq)
			h := newHarness(t, cfgOf(mergeRule(tt.match)), Options{})
			h.play(lines)
			h.wantEvents(append(acceptedPrefix(lines, tt.prefix), tt.want...)...)
			h.wantCounters(tt.counters)
			h.allVerdicts()
			if n := h.eng.Pending(); n != 0 {
				t.Errorf("%d segments still pending", n)
			}
		})
	}
}

// The record of the merged ACK, in full.
func TestMergeRecord(t *testing.T) {
	h := newHarness(t, cfgOf(mergeRule(Match{Side: Server, PureACK: true, Phases: PhaseAckOfClientFIN})), Options{})
	h.play(loadSeq(t, "three-way-close.txt"))
	var got *Record
	for i, r := range h.records {
		if r.Verdict == Drop {
			got = &h.records[i]
		}
	}
	if got == nil {
		t.Fatal("no drop record")
	}
	want := Record{
		Time:        t0.Add(8 * time.Millisecond).UnixNano(),
		VerdictTime: t0.Add(18 * time.Millisecond).UnixNano(),
		Client:      testClient,
		Server:      testServer,
		Incarnation: 1,
		Side:        Server,
		Flags:       fACK,
		Seq:         5201,
		Ack:         1102,
		Len:         0,
		Rule:        "merge-ack",
		Action:      "merge",
		Verdict:     Drop,
		HeldNS:      int64(10 * time.Millisecond),
	}
	if got.ID == 0 {
		t.Errorf("record without the packet id: %+v", *got)
	}
	want.ID = got.ID
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("record\n\t%+v\nwant\n\t%+v", *got, want)
	}
}

func TestLostFIN(t *testing.T) {
	lines := loadSeq(t, "lost-fin.txt")
	r := rule("drop-first-client-fin", Match{Side: Client, HasFlags: fFIN, Nth: 1}, "drop", &DropAction{})
	h := newHarness(t, cfgOf(r), Options{})
	h.play(lines)
	want := acceptedPrefix(lines, len(lines))
	want[3] = "4 client FIN|ACK drop drop-first-client-fin/drop"
	h.wantEvents(want...)
	h.wantCounters(Counters{Rule: "drop-first-client-fin", Matched: 1, Dropped: 1})
}

func TestLostFinalACK(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    Match
	}{
		{"nth", Match{Side: Client, PureACK: true, Phases: PhaseAckOfServerFIN, Nth: 1}},
		{"limit", Match{Side: Client, PureACK: true, Phases: PhaseAckOfServerFIN, Limit: 1}},
		{"global limit", Match{Side: Client, PureACK: true, Phases: PhaseAckOfServerFIN, GlobalLimit: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := loadSeq(t, "lost-final-ack.txt")
			h := newHarness(t, cfgOf(rule("drop-final-ack", tt.m, "drop", &DropAction{})), Options{})
			h.play(lines)
			want := acceptedPrefix(lines, len(lines))
			want[6] = "7 client ACK drop drop-final-ack/drop"
			h.wantEvents(want...)
			h.wantCounters(Counters{Rule: "drop-final-ack", Matched: 1, Dropped: 1})
		})
	}
}

func holdFINRules(timeout time.Duration, onTimeout Verdict, limit int) *Config {
	return cfgOf(
		rule("hold-client-fin", Match{Side: Client, HasFlags: fFIN, Limit: limit}, "hold",
			&HoldAction{Until: EventPeerFIN, Timeout: Duration(timeout), OnTimeout: onTimeout}),
		rule("hold-server-fin", Match{Side: Server, HasFlags: fFIN, Limit: limit}, "hold",
			&HoldAction{Until: EventPeerFIN, Timeout: Duration(timeout), OnTimeout: onTimeout}),
	)
}

func TestSimultaneousClose(t *testing.T) {
	lines := loadSeq(t, "simultaneous-close.txt")
	h := newHarness(t, holdFINRules(5*time.Second, Accept, 0), Options{})
	h.play(lines)
	want := acceptedPrefix(lines, len(lines))
	want[3] = "4 client FIN|ACK accept hold-client-fin/hold held=3ms"
	want[4] = "5 server FIN|ACK accept hold-server-fin/hold"
	h.wantEvents(want...)
	h.wantCounters(
		Counters{Rule: "hold-client-fin", Matched: 1, Held: 1},
		Counters{Rule: "hold-server-fin", Matched: 1, Held: 1},
	)
	if h.clk.Pending() != 0 {
		t.Errorf("%d timers left", h.clk.Pending())
	}
}

func TestHoldTimeout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		onTimeout Verdict
		limit     int
		want      []string
	}{
		{"drop", Drop, 1, []string{
			"4 client FIN|ACK drop hold-client-fin/hold held=2s",
			"5 client FIN|ACK accept",
		}},
		{"pass", Accept, 1, []string{
			"4 client FIN|ACK accept hold-client-fin/hold held=2s",
			"5 client FIN|ACK accept",
		}},
		{"retransmission held again, released by Close", Drop, 0, []string{
			"4 client FIN|ACK drop hold-client-fin/hold held=2s",
			"5 client FIN|ACK accept hold-client-fin/hold held=100ms",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := loadSeq(t, "fin-no-peer.txt")
			h := newHarness(t, holdFINRules(0, tt.onTimeout, tt.limit), Options{})
			h.play(lines)
			h.clk.Advance(100 * time.Millisecond)
			h.eng.Close()
			h.wantEvents(append(acceptedPrefix(lines, 3), tt.want...)...)
			h.allVerdicts()
		})
	}
}

func TestHoldEvents(t *testing.T) {
	// A server data segment held until each event; the client FIN comes at 10ms, the
	// server FIN at 20ms.
	for _, tt := range []struct {
		ev   Event
		want string
	}{
		{EventPeerFIN, "4 server PSH|ACK accept hold/hold held=10ms"},
		{EventClientFIN, "4 server PSH|ACK accept hold/hold held=10ms"},
		{EventOwnFIN, "4 server PSH|ACK accept hold/hold held=20ms"},
		{EventServerFIN, "4 server PSH|ACK accept hold/hold held=20ms"},
		{EventBothFINs, "4 server PSH|ACK accept hold/hold held=20ms"},
	} {
		t.Run(tt.ev.String(), func(t *testing.T) {
			h := newHarness(t, cfgOf(rule("hold", Match{Side: Server, Payload: 1}, "hold", &HoldAction{Until: tt.ev})), Options{})
			h.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
			h.handle(seg(testServer, testClient, fSYN|fACK, 5000, 1001, 0))
			h.handle(seg(testClient, testServer, fACK, 1001, 5001, 0))
			h.handle(seg(testServer, testClient, fPSH|fACK, 5001, 1001, 10))
			h.clk.Advance(10 * time.Millisecond)
			h.handle(seg(testClient, testServer, fFIN|fACK, 1001, 5011, 0))
			h.clk.Advance(10 * time.Millisecond)
			h.handle(seg(testServer, testClient, fFIN|fACK, 5011, 1002, 0))
			var got string
			for _, e := range h.events {
				if strings.HasPrefix(e, "4 ") {
					got = e
				}
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Matching walks through every way a rule can select segments, over three connections
// whose client data segments interleave: c1#1 c2#1 c3#1 c1#2 c2#2 ...
func TestMatchCounting(t *testing.T) {
	data := Match{Side: Client, Payload: 1}
	with := func(f func(m *Match)) Match { m := data; f(&m); return m }
	tests := []struct {
		name string
		m    Match
		want string
	}{
		{"every", data, "c1#1 c2#1 c3#1 c1#2 c2#2 c3#2 c1#3 c2#3 c3#3 c1#4 c2#4 c3#4"},
		{"nth 2", with(func(m *Match) { m.Nth = 2 }), "c1#2 c2#2 c3#2"},
		{"nth 5", with(func(m *Match) { m.Nth = 5 }), ""},
		{"limit 2", with(func(m *Match) { m.Limit = 2 }), "c1#1 c2#1 c3#1 c1#2 c2#2 c3#2"},
		{"global limit 2", with(func(m *Match) { m.GlobalLimit = 2 }), "c1#1 c2#1"},
		{"nth 3 limit 1", with(func(m *Match) { m.Nth, m.Limit = 3, 1 }), "c1#3 c2#3 c3#3"},
		{"limit 3 global 4", with(func(m *Match) { m.Limit, m.GlobalLimit = 3, 4 }), "c1#1 c2#1 c3#1 c1#2"},
		{"server side", with(func(m *Match) { m.Side = Server }), ""},
		{"no payload", with(func(m *Match) { m.Payload = -1 }), ""},
		{"exact flags", with(func(m *Match) { m.Flags, m.FlagsSet = fPSH|fACK, true }), "c1#1 c2#1 c3#1 c1#2 c2#2 c3#2 c1#3 c2#3 c3#3 c1#4 c2#4 c3#4"},
		{"exact flags ACK", with(func(m *Match) { m.Flags, m.FlagsSet = fACK, true }), ""},
		{"phase established", with(func(m *Match) { m.Phases = PhaseEstablished }), "c1#1 c2#1 c3#1 c1#2 c2#2 c3#2 c1#3 c2#3 c3#3 c1#4 c2#4 c3#4"},
		{"phase handshake", with(func(m *Match) { m.Phases = PhaseHandshake }), ""},
		{"probability 1", with(func(m *Match) { m.Probability = 1 }), "c1#1 c2#1 c3#1 c1#2 c2#2 c3#2 c1#3 c2#3 c3#3 c1#4 c2#4 c3#4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgOf(rule("r", tt.m, "drop", &DropAction{})), Options{})
			names := map[uint32]string{}
			for k := 1; k <= 4; k++ {
				for c := 1; c <= 3; c++ {
					client := netip.AddrPortFrom(testClient.Addr(), uint16(40000+c))
					id := h.handle(seg(client, testServer, fPSH|fACK, uint32(1000+k*10), 5000, 10))
					names[id] = fmt.Sprintf("c%d#%d", c, k)
				}
			}
			var got []string
			for _, e := range h.events {
				var id uint32
				fmt.Sscan(e, &id)
				if strings.Contains(e, " drop ") {
					got = append(got, names[id])
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("dropped %q, want %q", g, tt.want)
			}
			if c := h.eng.Counters()[0]; c.Matched != uint64(len(got)) || c.Dropped != uint64(len(got)) {
				t.Errorf("counters %+v for %d drops", c, len(got))
			}
		})
	}
}

// nth counts every segment that satisfies a rule, even one an earlier rule acted on.
func TestNthCountsIndependently(t *testing.T) {
	h := newHarness(t, cfgOf(
		rule("drop-first", Match{Side: Client, HasFlags: fFIN, Nth: 1}, "drop", &DropAction{}),
		rule("count-second", Match{Side: Client, HasFlags: fFIN, Nth: 2}, "pass", &PassAction{}),
	), Options{})
	for range 3 {
		h.handle(seg(testClient, testServer, fFIN|fACK, 1000, 5000, 0))
	}
	h.wantEvents(
		"1 client FIN|ACK drop drop-first/drop",
		"2 client FIN|ACK accept count-second/pass",
		"3 client FIN|ACK accept",
	)
	h.wantCounters(
		Counters{Rule: "drop-first", Matched: 1, Dropped: 1},
		Counters{Rule: "count-second", Matched: 1, Passed: 1},
	)
}

// First matching rule wins; the others are not consulted.
func TestRuleOrder(t *testing.T) {
	h := newHarness(t, cfgOf(
		rule("pass-fin", Match{HasFlags: fFIN}, "pass", &PassAction{}),
		rule("drop-fin", Match{HasFlags: fFIN}, "drop", &DropAction{}),
		rule("drop-rst", Match{Flags: fRST, FlagsSet: true}, "drop", &DropAction{}),
	), Options{})
	h.handle(seg(testClient, testServer, fFIN|fACK, 1, 1, 0))
	h.handle(seg(testServer, testClient, fRST, 1, 0, 0))
	h.handle(seg(testServer, testClient, fRST|fACK, 1, 1, 0))
	h.wantEvents(
		"1 client FIN|ACK accept pass-fin/pass",
		"2 server RST drop drop-rst/drop",
		"3 server RST|ACK accept",
	)
}

// runDrops drops client data segments with probability p over n segments and returns the
// verdicts as a string of 'a' and 'd'.
func runDrops(t *testing.T, seed int64, p float64, n int) string {
	cfg := cfgOf(rule("maybe", Match{Side: Client, Payload: 1, Probability: p}, "drop", &DropAction{}))
	cfg.Seed = seed
	h := newHarness(t, cfg, Options{})
	var b strings.Builder
	for i := range n {
		id := h.handle(seg(testClient, testServer, fPSH|fACK, uint32(1000+10*i), 5000, 10))
		if h.verdicts[id] == Drop {
			b.WriteByte('d')
		} else {
			b.WriteByte('a')
		}
	}
	return b.String()
}

func TestProbabilitySeeded(t *testing.T) {
	const n = 2000
	a, b := runDrops(t, 42, 0.3, n), runDrops(t, 42, 0.3, n)
	if a != b {
		t.Error("same seed, different drops")
	}
	if c := runDrops(t, 43, 0.3, n); c == a {
		t.Error("another seed, same drops")
	}
	drops := strings.Count(a, "d")
	// 3 standard deviations around n*p = 600 (sd about 20.5).
	if drops < 540 || drops > 660 {
		t.Errorf("%d drops of %d at p=0.3", drops, n)
	}
}

// delays runs n server data segments through a delay rule and returns each one's delay.
func delays(t *testing.T, seed int64, delay, jitter time.Duration, n int) []time.Duration {
	cfg := cfgOf(rule("delay", Match{Side: Server}, "delay", &DelayAction{Delay: Duration(delay), Jitter: Duration(jitter)}))
	cfg.Seed = seed
	h := newHarness(t, cfg, Options{})
	for i := range n {
		h.handle(seg(testServer, testClient, fPSH|fACK, uint32(5000+10*i), 1000, 10))
		h.clk.Advance(time.Millisecond)
	}
	h.clk.Advance(delay + jitter + time.Second)
	h.allVerdicts()
	out := make([]time.Duration, n)
	for i, r := range h.records {
		if r.Verdict != Accept || r.Rule != "delay" {
			t.Fatalf("record %d: %+v", i, r)
		}
		out[r.Seq/10-500] = time.Duration(r.HeldNS)
	}
	if c := h.eng.Counters()[0]; c.Delayed != uint64(n) || c.Matched != uint64(n) {
		t.Errorf("counters %+v", c)
	}
	return out
}

func TestDelayJitter(t *testing.T) {
	const n = 400
	a := delays(t, 7, 100*time.Millisecond, 50*time.Millisecond, n)
	if b := delays(t, 7, 100*time.Millisecond, 50*time.Millisecond, n); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("same seed, different delays")
	}
	if c := delays(t, 8, 100*time.Millisecond, 50*time.Millisecond, n); fmt.Sprint(a) == fmt.Sprint(c) {
		t.Error("another seed, same delays")
	}
	var sum time.Duration
	distinct := map[time.Duration]bool{}
	for _, d := range a {
		if d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Errorf("delay %v outside 100ms ± 50ms", d)
		}
		sum += d
		distinct[d] = true
	}
	if mean := sum / n; math.Abs(float64(mean-100*time.Millisecond)) > float64(6*time.Millisecond) {
		t.Errorf("mean delay %v, want about 100ms", mean)
	}
	if len(distinct) < n/2 {
		t.Errorf("only %d distinct delays", len(distinct))
	}

	// Jitter larger than the delay: never negative.
	low := 0
	for _, d := range delays(t, 7, 10*time.Millisecond, 50*time.Millisecond, n) {
		if d < 0 || d > 60*time.Millisecond {
			t.Errorf("delay %v outside [0, 60ms]", d)
		}
		if d == 0 {
			low++
		}
	}
	if low == 0 {
		t.Error("no delay was clamped to 0")
	}

	// No jitter: exact.
	for _, d := range delays(t, 7, 30*time.Millisecond, 0, 10) {
		if d != 30*time.Millisecond {
			t.Errorf("delay %v, want 30ms", d)
		}
	}
}

func TestPreexistingConnection(t *testing.T) {
	lines := loadSeq(t, "preexisting.txt")
	cfg := cfgOf(rule("drop-client-fin", Match{Side: Client, HasFlags: fFIN}, "drop", &DropAction{}))
	cfg.Target.Port = 50000
	h := newHarness(t, cfg, Options{})
	h.play(lines) // checks each sender's side
	c := h.observed[1].conn
	if !c.Inferred() || !c.HandshakeDone() || c.SYNSeen(Client) {
		t.Errorf("inferred %v, handshake done %v, client SYN %v", c.Inferred(), c.HandshakeDone(), c.SYNSeen(Client))
	}
	want := acceptedPrefix(lines, len(lines))
	want[2] = "3 client FIN|ACK drop drop-client-fin/drop"
	h.wantEvents(want...)
	if !c.Finished() {
		t.Error("not finished")
	}

	// Without a target port the lower port is taken as the server's.
	cfg.Target.Port = 0
	h = newHarness(t, cfg, Options{})
	h.handle(lines[0].seg)
	if c := h.observed[1].conn; c.Server() != lines[0].seg.Src {
		t.Errorf("server %s, want the lower port %s", c.Server(), lines[0].seg.Src)
	}
}

func TestWraparound(t *testing.T) {
	lines := loadSeq(t, "wraparound.txt")
	r := rule("drop-ack-of-fin", Match{Side: Server, PureACK: true, Phases: PhaseAckOfClientFIN}, "drop", &DropAction{})
	h := newHarness(t, cfgOf(r), Options{})
	h.play(lines)
	want := acceptedPrefix(lines, len(lines))
	want[4] = "5 server ACK drop drop-ack-of-fin/drop"
	h.wantEvents(want...)
	c := h.observed[7].conn
	if c.FINSeq(Client) != 5 || c.FINSeq(Server) != 0 || !c.FINAcked(Client) || !c.FINAcked(Server) || !c.Finished() {
		t.Errorf("FIN seq %d/%d, acked %v/%v", c.FINSeq(Client), c.FINSeq(Server), c.FINAcked(Client), c.FINAcked(Server))
	}
}

func TestIncarnations(t *testing.T) {
	lines := loadSeq(t, "incarnation.txt")
	r := rule("drop-first-client-fin", Match{Side: Client, HasFlags: fFIN, Nth: 1}, "drop", &DropAction{})
	h := newHarness(t, cfgOf(r), Options{})
	h.play(lines)
	want := acceptedPrefix(lines, len(lines))
	want[4] = "5 client FIN|ACK drop drop-first-client-fin/drop"
	want[12] = "13 client FIN|ACK drop drop-first-client-fin/drop"
	h.wantEvents(want...)
	old, cur := h.observed[9].conn, h.observed[10].conn
	if old == cur || !old.Finished() || cur.FINSeen(Client) && cur.FINSeq(Client) != 9001 {
		t.Error("the new incarnation shares state with the old")
	}
	if cur.Created() != t0.Add(2206*time.Millisecond) {
		t.Errorf("created %v", cur.Created().Sub(t0))
	}
	if n := h.eng.Conns(); n != 1 {
		t.Errorf("Conns = %d", n)
	}
	// Each record names its incarnation: the event log, and the lab's reports, tell the
	// two connections of the 4-tuple apart.
	for i, r := range h.records {
		if want := 1 + min(i/9, 1); r.Incarnation != want {
			t.Errorf("record %d (%s %v seq %d): incarnation %d, want %d", i+1, r.Side, r.Flags, r.Seq, r.Incarnation, want)
		}
	}
}

// A RST ends a connection; a SYN after it starts the next incarnation.
func TestResetThenSYN(t *testing.T) {
	h := newHarness(t, cfgOf(), Options{})
	h.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	h.handle(seg(testServer, testClient, fRST|fACK, 0, 1001, 0))
	c := h.observed[2].conn
	if !c.RSTSeen(Server) || !c.Finished() {
		t.Error("RST not seen")
	}
	h.handle(seg(testClient, testServer, fSYN, 1000, 0, 0)) // same ISN, but after a RST
	if o := h.observed[3]; o.inc != 2 || o.phases != PhaseHandshake {
		t.Errorf("after RST: incarnation %d, phases %s", o.inc, o.phases)
	}
}

func TestExpiry(t *testing.T) {
	h := newHarness(t, cfgOf(), Options{})
	// A finished connection on port 40001, an open one on 40002.
	h.play(loadSeq(t, "four-way-close.txt"))
	other := netip.AddrPortFrom(testClient.Addr(), 40002)
	h.handle(seg(other, testServer, fSYN, 1, 0, 0))
	if n := h.eng.Conns(); n != 2 {
		t.Fatalf("Conns = %d", n)
	}
	h.clk.Advance(DefaultFinishedTimeout)
	if n := h.eng.Conns(); n != 1 {
		t.Errorf("after %v: Conns = %d, want 1 (the finished one expired)", DefaultFinishedTimeout, n)
	}
	h.clk.Advance(DefaultIdleTimeout - DefaultFinishedTimeout)
	if n := h.eng.Conns(); n != 0 {
		t.Errorf("after %v: Conns = %d, want 0", DefaultIdleTimeout, n)
	}

	// Lazily: each Handle expires a few idle connections.
	h = newHarness(t, cfgOf(), Options{IdleTimeout: time.Second})
	for i := range 10 {
		h.handle(seg(netip.AddrPortFrom(testClient.Addr(), uint16(41000+i)), testServer, fSYN, 1, 0, 0))
	}
	h.clk.Advance(2 * time.Second)
	for i := range 5 {
		h.handle(seg(netip.AddrPortFrom(testClient.Addr(), uint16(42000+i)), testServer, fSYN, 1, 0, 0))
	}
	if n := h.eng.tr.len(); n != 5 {
		t.Errorf("%d connections tracked, want the 5 new ones", n)
	}
	// A segment keeps its connection alive.
	h.clk.Advance(900 * time.Millisecond)
	h.handle(seg(netip.AddrPortFrom(testClient.Addr(), 42000), testServer, fACK, 2, 1, 0))
	h.clk.Advance(900 * time.Millisecond)
	if n := h.eng.Conns(); n != 1 {
		t.Errorf("Conns = %d, want 1", n)
	}
}

func TestEviction(t *testing.T) {
	h := newHarness(t, cfgOf(), Options{MaxConns: 3})
	port := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(testClient.Addr(), p) }
	h.handle(seg(port(1002), testServer, fSYN, 1, 0, 0)) // oldest, open
	h.clk.Advance(time.Millisecond)
	h.handle(seg(port(1001), testServer, fSYN, 1, 0, 0))
	h.handle(seg(port(1001), testServer, fRST, 2, 0, 0)) // finished
	h.clk.Advance(time.Millisecond)
	h.handle(seg(port(1003), testServer, fSYN, 1, 0, 0))
	h.handle(seg(port(1004), testServer, fSYN, 1, 0, 0)) // evicts the finished one: it expires first
	tracked := func(p uint16) bool {
		s := seg(port(p), testServer, fACK, 0, 0, 0)
		return h.eng.tr.lookup(&s) != nil
	}
	if tracked(1001) || !tracked(1002) || !tracked(1003) || !tracked(1004) {
		t.Errorf("after 4: %v %v %v %v", tracked(1001), tracked(1002), tracked(1003), tracked(1004))
	}
	h.handle(seg(port(1005), testServer, fSYN, 1, 0, 0)) // evicts the oldest open one
	if tracked(1002) || !tracked(1005) || h.eng.Conns() != 3 {
		t.Errorf("after 5: 1002 %v, 1005 %v, %d conns", tracked(1002), tracked(1005), h.eng.Conns())
	}
	// A finished connection seen long after an open one expires later: the open one goes.
	h.clk.Advance(time.Minute)
	h.handle(seg(port(1004), testServer, fRST, 2, 0, 0)) // finished now: expires in 75s
	h.handle(seg(port(1006), testServer, fSYN, 1, 0, 0)) // 1003, idle a minute, expires in 60s
	if tracked(1003) || !tracked(1004) || !tracked(1005) || !tracked(1006) {
		t.Errorf("after 6: %v %v %v %v", tracked(1003), tracked(1004), tracked(1005), tracked(1006))
	}
}

// 100k distinct 4-tuples through a table of 1000: the table and the heap stay bounded.
func TestBoundedTable(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const maxConns, tuples = 1000, 100_000
	eng := NewEngine(cfgOf(rule("fin", Match{HasFlags: fFIN}, "drop", &DropAction{})),
		Options{Sink: nopSink{}, MaxConns: maxConns, Clock: NewFakeClock(t0)})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range tuples {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(1024+i&0xff))
		s := seg(src, testServer, fSYN, uint32(i), 0, 0)
		eng.Handle(Packet{ID: uint32(i), Seg: s})
		if n := eng.tr.len(); n > maxConns {
			t.Fatalf("%d connections tracked", n)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4<<20 {
		t.Errorf("heap grew by %d bytes for %d tracked connections", grown, maxConns)
	}
	if eng.tr.open.n+eng.tr.done.n != eng.tr.len() {
		t.Errorf("lists hold %d+%d, table %d", eng.tr.open.n, eng.tr.done.n, eng.tr.len())
	}
	runtime.KeepAlive(eng)
}

type nopSink struct{}

func (nopSink) Verdict(uint32, Verdict) error { return nil }

func TestClose(t *testing.T) {
	cfg := cfgOf(
		rule("hold-client-fin", Match{Side: Client, HasFlags: fFIN}, "hold", &HoldAction{Until: EventPeerFIN, Timeout: Duration(time.Minute)}),
		rule("delay-server-data", Match{Side: Server, Payload: 1}, "delay", &DelayAction{Delay: Duration(time.Minute)}),
		mergeRule(Match{Side: Server, PureACK: true, Phases: PhaseAckOfClientFIN}),
	)
	h := newHarness(t, cfg, Options{})
	other := netip.AddrPortFrom(testClient.Addr(), 40001)
	h.handle(seg(testClient, testServer, fFIN|fACK, 1000, 5000, 0))  // 1 held
	h.clk.Advance(time.Millisecond)                                  //
	h.handle(seg(testServer, testClient, fPSH|fACK, 5000, 1000, 10)) // 2 delayed
	h.handle(seg(other, testServer, fFIN|fACK, 100, 200, 0))         // 3 held (other conn)
	h.clk.Advance(time.Millisecond)                                  //
	h.handle(seg(testServer, other, fACK, 200, 101, 0))              // 4 merge-held
	h.handle(seg(testServer, testClient, fACK, 5010, 1000, 0))       // 5 passes
	if n := h.eng.Pending(); n != 4 {
		t.Fatalf("%d pending", n)
	}
	h.clk.Advance(time.Millisecond)
	h.eng.Close()
	h.eng.Close()
	h.handle(seg(testClient, testServer, fACK, 1001, 5011, 0)) // 6: after Close
	h.handle(seg(netip.MustParseAddrPort("10.7.7.7:1234"), testServer, fSYN, 1, 0, 0))
	h.clk.Advance(time.Hour)
	h.wantEvents(
		"5 server ACK accept",
		"1 client FIN|ACK accept hold-client-fin/hold held=3ms",
		"2 server PSH|ACK accept delay-server-data/delay held=2ms",
		"3 client FIN|ACK accept hold-client-fin/hold held=2ms",
		"4 server ACK accept merge-ack/merge held=1ms",
		"6 client ACK accept",
		"7 client SYN accept",
	)
	h.allVerdicts()
	h.wantCounters(
		Counters{Rule: "hold-client-fin", Matched: 2, Held: 2},
		Counters{Rule: "delay-server-data", Matched: 1, Delayed: 1},
		Counters{Rule: "merge-ack", Matched: 1, Passed: 1},
	)
	if n := h.clk.Pending(); n != 0 {
		t.Errorf("%d timers still set", n)
	}
	if n := h.eng.Pending(); n != 0 {
		t.Errorf("%d segments pending", n)
	}
	if r := h.records[len(h.records)-1]; r.Client != netip.MustParseAddrPort("10.7.7.7:1234") || r.Side != Client {
		t.Errorf("record after Close: %+v", r)
	}
}

// panicAction panics, or decides twice.
type panicAction struct{ twice bool }

func (a *panicAction) Apply(c *Context) {
	if a.twice {
		c.Drop()
		c.Pass()
	}
	panic("boom")
}

// untilAction holds with a condition that panics once the server's FIN has been seen.
type untilAction struct{}

func (untilAction) Apply(c *Context) {
	c.Hold(Hold{Until: func(conn *Conn) bool {
		if conn.FINSeen(Server) {
			panic("until boom")
		}
		return false
	}, OnRelease: Drop, OnTimeout: Drop})
}

func TestActionPanics(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	h := newHarness(t, cfgOf(
		rule("panics", Match{HasFlags: fSYN}, "panic", &panicAction{}),
		rule("twice", Match{HasFlags: fRST}, "twice", &panicAction{twice: true}),
		rule("until", Match{Side: Client, HasFlags: fFIN}, "until", untilAction{}),
	), Options{Logger: logger})
	h.handle(seg(testClient, testServer, fSYN, 1, 0, 0))
	h.handle(seg(testClient, testServer, fRST, 2, 0, 0))
	h.handle(seg(other(1), testServer, fFIN|fACK, 2, 0, 0))
	h.handle(seg(testServer, other(1), fFIN|fACK, 2, 3, 0))
	h.wantEvents(
		"1 client SYN accept panics/panic",
		"2 client RST accept twice/twice",
		"3 client FIN|ACK accept until/until",
		"4 server FIN|ACK accept",
	)
	for _, want := range []string{"boom", "decided twice", "until boom", "action panicked", "hold condition panicked"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

func other(i int) netip.AddrPort { return netip.AddrPortFrom(testClient.Addr(), uint16(45000+i)) }

// An action that decides nothing passes the segment; a nil action too.
func TestNoDecision(t *testing.T) {
	h := newHarness(t, cfgOf(
		rule("nothing", Match{HasFlags: fSYN}, "nothing", ActionFunc(func(*Context) {})),
		rule("", Match{HasFlags: fFIN}, "", nil),
	), Options{})
	h.handle(seg(testClient, testServer, fSYN, 1, 0, 0))
	h.handle(seg(testClient, testServer, fFIN, 1, 0, 0))
	h.wantEvents("1 client SYN accept nothing/nothing", "2 client FIN accept rule[2]/")
}

// ActionFunc adapts a function to Action (tests).
type ActionFunc func(*Context)

func (f ActionFunc) Apply(c *Context) { f(c) }

// The context an action sees.
func TestContext(t *testing.T) {
	var got []string
	probe := ActionFunc(func(c *Context) {
		got = append(got, fmt.Sprintf("%s %s %s %s %v %d", c.Rule.Name, c.Side, c.Packet.Seg.Flags, c.Phases,
			c.Now().Sub(t0), c.Conn.Segments(c.Side)))
		if c.Rand() == nil || c.Logger() == nil {
			t.Error("no rand or logger")
		}
		c.Delay(0)
	})
	h := newHarness(t, cfgOf(rule("probe", Match{}, "probe", probe)), Options{})
	h.handle(seg(testClient, testServer, fSYN, 1, 0, 0))
	h.clk.Advance(time.Second)
	h.handle(seg(testServer, testClient, fSYN|fACK, 9, 2, 0))
	want := []string{"probe client SYN handshake 0s 1", "probe server SYN|ACK handshake 1s 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
	h.wantCounters(Counters{Rule: "probe", Matched: 2, Delayed: 2})
}

// Concurrent timers, Handle and readers with the real clock (run with -race).
func TestConcurrentRealClock(t *testing.T) {
	var mu sync.Mutex
	seen := map[uint32]int{}
	sink := sinkFunc(func(id uint32, v Verdict) error {
		mu.Lock()
		seen[id]++
		mu.Unlock()
		return nil
	})
	eng := NewEngine(cfgOf(
		rule("hold-client-fin", Match{Side: Client, HasFlags: fFIN}, "hold", &HoldAction{Until: EventPeerFIN, Timeout: Duration(3 * time.Millisecond)}),
		rule("delay", Match{Side: Server}, "delay", &DelayAction{Delay: Duration(time.Millisecond), Jitter: Duration(time.Millisecond)}),
		mergeRule(Match{Side: Client, PureACK: true}),
	), Options{Sink: sink, Log: func(Record) {}})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-time.After(100 * time.Microsecond):
				eng.Counters()
				eng.Conns()
			case <-stop:
				return
			}
		}
	}()
	const n = 3000
	for i := range n {
		c := other(i % 50)
		var s segment.Segment
		switch i % 4 {
		case 0:
			s = seg(c, testServer, fFIN|fACK, uint32(i), 1, 0)
		case 1:
			s = seg(testServer, c, fPSH|fACK, uint32(i), 1, 10)
		case 2:
			s = seg(c, testServer, fACK, uint32(i), 1, 0)
		case 3:
			s = seg(testServer, c, fFIN|fACK, uint32(i), 1, 0)
		}
		eng.Handle(Packet{ID: uint32(i + 1), Time: time.Now(), Seg: s})
		if i%500 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	time.Sleep(5 * time.Millisecond)
	eng.Close()
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	for id := uint32(1); id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("packet %d: %d verdicts", id, seen[id])
		}
	}
}

type sinkFunc func(uint32, Verdict) error

func (f sinkFunc) Verdict(id uint32, v Verdict) error { return f(id, v) }

// A failing sink is logged, and the engine goes on.
func TestSinkError(t *testing.T) {
	var buf bytes.Buffer
	n := 0
	eng := NewEngine(nil, Options{
		Sink:   sinkFunc(func(uint32, Verdict) error { return fmt.Errorf("ENOENT") }),
		Log:    func(Record) { n++ },
		Logger: slog.New(slog.NewTextHandler(&buf, nil)),
	})
	eng.Handle(Packet{ID: 1, Seg: seg(testClient, testServer, fSYN, 1, 0, 0)})
	if n != 1 || !strings.Contains(buf.String(), "ENOENT") {
		t.Errorf("%d records, log %q", n, buf.String())
	}
}

func TestNewEngineWithoutSink(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewEngine(nil, Options{})
}

func passPathEngine() (*Engine, Packet) {
	cfg := cfgOf(
		rule("drop-client-fin", Match{Side: Client, HasFlags: fFIN, Nth: 1}, "drop", &DropAction{}),
		mergeRule(Match{Side: Server, PureACK: true, Phases: PhaseAckOfClientFIN}),
		rule("hold-server-fin", Match{Side: Server, HasFlags: fFIN}, "hold", &HoldAction{Until: EventPeerFIN}),
	)
	eng := NewEngine(cfg, Options{Sink: nopSink{}, Log: func(Record) {}})
	eng.Handle(Packet{ID: 1, Seg: seg(testClient, testServer, fSYN, 1000, 0, 0)})
	eng.Handle(Packet{ID: 2, Seg: seg(testServer, testClient, fSYN|fACK, 5000, 1001, 0)})
	eng.Handle(Packet{ID: 3, Seg: seg(testClient, testServer, fACK, 1001, 5001, 0)})
	return eng, Packet{ID: 4, Time: time.Now(), Seg: seg(testClient, testServer, fPSH|fACK, 1001, 5001, 100)}
}

// The pass path (a segment of a tracked connection that no rule matches) allocates nothing.
func TestHandlePassAllocs(t *testing.T) {
	eng, p := passPathEngine()
	allocs := testing.AllocsPerRun(1000, func() {
		p.ID++
		p.Seg.Seq += 100
		eng.Handle(p)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Handle on the pass path", allocs)
	}
}

func BenchmarkHandlePass(b *testing.B) {
	eng, p := passPathEngine()
	b.ReportAllocs()
	for b.Loop() {
		p.ID++
		p.Seg.Seq += 100
		eng.Handle(p)
	}
}
