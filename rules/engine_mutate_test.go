package rules

// Tests of what the engine does for actions that rewrite and inject (PassModified, Held
// and ReleaseModified, Inject, RewriteClientPort), and mharness: the test harness with a
// ModifySink and real packet bytes for every segment.

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/segtest"
	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

// mharness is a harness whose sink can accept rewritten segments and inject, and whose
// segments carry their bytes (built with mutate; the payload of a segment is a function
// of its sequence numbers, so that a merged payload can be checked).
type mharness struct {
	*harness
	out       map[uint32][]byte // packets accepted with new bytes, by id
	injected  [][]byte
	injectErr error
}

func newMHarness(t testing.TB, cfg *Config, opts Options) *mharness {
	h := &harness{t: t, clk: NewFakeClock(t0), verdicts: map[uint32]Verdict{}, observed: map[uint32]observation{}}
	m := &mharness{harness: h, out: map[uint32][]byte{}}
	opts.Sink = m
	opts.Log = h.record
	opts.Clock = h.clk
	h.eng = NewEngine(cfg, opts)
	h.eng.observe = func(c *Conn, _ Side, phases Phase) {
		h.observed[h.curID] = observation{phases, c.Incarnation(), c}
	}
	return m
}

// AcceptModified implements ModifySink.
func (m *mharness) AcceptModified(id uint32, data []byte) error {
	if err := mutate.Check(data); err != nil {
		m.t.Errorf("packet %d accepted with a broken packet: %v", id, err)
	}
	if err := m.harness.Verdict(id, Accept); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out[id] = data
	return nil
}

// Inject implements ModifySink.
func (m *mharness) Inject(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastID = 0
	if m.injectErr != nil {
		return m.injectErr
	}
	if err := mutate.Check(data); err != nil {
		m.t.Errorf("injected a broken packet: %v", err)
	}
	m.injected = append(m.injected, data)
	return nil
}

// handle hands one segment with its bytes to the engine and returns its id.
func (m *mharness) handle(seg segment.Segment) uint32 {
	m.nextID++
	m.curID = m.nextID
	m.eng.Handle(Packet{ID: m.curID, Time: m.clk.Now(), Seg: seg, Data: segtest.PacketOf(m.t, seg)})
	return m.curID
}

// play runs a sequence as harness.play does, with packet bytes.
func (m *mharness) play(lines []seqLine) {
	m.t.Helper()
	for _, l := range lines {
		m.clk.Advance(l.delta)
		id := m.handle(l.seg)
		o, ok := m.observed[id]
		if !ok {
			m.t.Fatalf("line %d: the engine did not track segment %d", l.line, id)
		}
		if l.hasPhases && o.phases != l.phases {
			m.t.Errorf("line %d (%s): phases %s, want %s", l.line, &l.seg, o.phases, l.phases)
		}
		if l.inc != 0 && o.inc != l.inc {
			m.t.Errorf("line %d (%s): incarnation %d, want %d", l.line, &l.seg, o.inc, l.inc)
		}
	}
}

// outSeg is packet id as it was accepted with new bytes (nil if it was not).
func (m *mharness) outSeg(id uint32) *mutate.Segment {
	m.t.Helper()
	m.mu.Lock()
	b := m.out[id]
	m.mu.Unlock()
	if b == nil {
		return nil
	}
	s, err := mutate.Parse(b)
	if err != nil {
		m.t.Fatalf("packet %d: %v", id, err)
	}
	return s
}

// injectedSegs are the injected packets, in order.
func (m *mharness) injectedSegs() []*mutate.Segment {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*mutate.Segment
	for _, b := range m.injected {
		s, err := mutate.Parse(b)
		if err != nil {
			m.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// wantRecord checks the record at index i (in log order).
func (m *mharness) record(i int) Record {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if i >= len(m.records) {
		m.t.Fatalf("record %d of %d", i, len(m.records))
	}
	return m.records[i]
}

// testAction is an action driven by a function, for the engine's tests.
type testAction func(c *Context)

func (f testAction) Apply(c *Context) { f(c) }

func cfgAct(name string, m Match, f func(c *Context)) *Config {
	return cfgOf(rule(name, m, "test", testAction(f)))
}

// PassModified: the segment leaves with the new bytes; its record says Modified and
// describes it as it left, with Out; the rule counts it as Passed and Modified.
func TestPassModified(t *testing.T) {
	m := newMHarness(t, cfgAct("clear-fin", Match{HasFlags: fFIN}, func(c *Context) {
		s, err := mutate.Parse(c.Packet.Data)
		if err != nil {
			t.Fatal(err)
		}
		s.ClearFlags(segment.FIN)
		b, _ := s.Bytes()
		c.PassModified(b)
	}), Options{})
	m.handle(seg(testClient, testServer, fFIN|fACK, 1, 1, 0))
	m.wantEvents("1 client ACK accept clear-fin/test modified")
	r := m.record(0)
	if r.Out == nil || r.Flags != fACK || r.ID != 1 {
		t.Errorf("record %+v", r)
	}
	if s := m.outSeg(1); s == nil || s.Flags() != fACK {
		t.Errorf("accepted as %v", s)
	}
	m.wantCounters(Counters{Rule: "clear-fin", Matched: 1, Passed: 1, Modified: 1})
}

// With a plain Sink a rewritten segment passes unchanged, and actions see CanRewrite false.
func TestPassModifiedPlainSink(t *testing.T) {
	can := true
	h := newHarness(t, cfgAct("clear-fin", Match{HasFlags: fFIN}, func(c *Context) {
		can = c.CanRewrite()
		c.PassModified([]byte{0x45})
	}), Options{})
	h.handle(seg(testClient, testServer, fFIN|fACK, 1, 1, 0))
	h.wantEvents("1 client FIN|ACK accept clear-fin/test")
	h.wantCounters(Counters{Rule: "clear-fin", Matched: 1, Passed: 1})
	if can {
		t.Error("CanRewrite with a plain Sink")
	}
}

// A held segment (KeepData) released by the action of a later segment, changed, gets
// its verdict before that segment's; Held lists only this rule's segments of this
// connection.
func TestHeldReleaseModified(t *testing.T) {
	var seen []int
	m := newMHarness(t, cfgAct("hold-then-merge", Match{Side: Server}, func(c *Context) {
		held := c.Held()
		seen = append(seen, len(held))
		switch {
		case c.Packet.Seg.PayloadLen > 0:
			c.Hold(Hold{Timeout: time.Second, KeepData: true, Kind: KindMerge})
		case len(held) == 1:
			if len(held[0].Data()) == 0 || held[0].Seg().PayloadLen != 5 {
				t.Errorf("held segment %v without its data", held[0].Seg())
			}
			d, _ := mutate.Parse(held[0].Data())
			f, _ := mutate.Parse(c.Packet.Data)
			if err := d.Append(f); err != nil {
				t.Fatal(err)
			}
			b, _ := d.Bytes()
			c.ReleaseModified(held[0], b)
			if len(c.Held()) != 0 {
				t.Error("a released segment is still listed")
			}
			c.DropMerged()
		}
	}), Options{})
	m.handle(seg(testServer, testClient, fPSH|fACK, 100, 1, 5))
	m.clk.Advance(time.Millisecond)
	m.handle(seg(testClient, testServer, fACK, 1, 105, 0))
	m.handle(seg(testServer, testClient, fFIN|fACK, 105, 1, 0))
	m.wantEvents(
		"2 client ACK accept",
		"1 server FIN|PSH|ACK accept hold-then-merge/test held=1ms modified",
		"3 server FIN|ACK drop hold-then-merge/test",
	)
	if fmt.Sprint(seen) != "[0 1]" {
		t.Errorf("Held lengths %v", seen)
	}
	m.wantCounters(Counters{Rule: "hold-then-merge", Matched: 2, Passed: 1, Merged: 1, Modified: 1})
	m.allVerdicts()
}

// Injections: now (after the segment's verdict), after a delay, and when a condition on
// the 4-tuple comes true, in a later incarnation; records are Injected with ID 0.
func TestInjectTimings(t *testing.T) {
	rst := func(c *Context) []byte {
		b, err := mutate.Reset(c.Conn.Server(), c.Conn.Client(), 7, 8)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var first *Conn
	m := newMHarness(t, cfgAct("inj", Match{Side: Client, HasFlags: fSYN}, func(c *Context) {
		if c.Conn.Incarnation() > 1 {
			c.Pass()
			return
		}
		first = c.Conn
		c.Inject(Injection{Data: rst(c)})
		c.Inject(Injection{Data: rst(c), Delay: 50 * time.Millisecond})
		c.Inject(Injection{Data: rst(c), Until: func(cur *Conn) bool { return cur != first }, Timeout: time.Minute})
		c.Drop()
	}), Options{})
	m.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	m.clk.Advance(100 * time.Millisecond)
	m.handle(seg(testClient, testServer, fSYN, 9000, 0, 0)) // another ISN: incarnation 2
	m.wantEvents(
		"1 client SYN drop inj/test",
		"0 server RST|ACK accept inj/test injected",
		"0 server RST|ACK accept inj/test held=50ms injected",
		"2 client SYN accept inj/test",
		"0 server RST|ACK accept inj/test held=100ms injected",
	)
	if n := len(m.injectedSegs()); n != 3 {
		t.Errorf("%d injected", n)
	}
	m.wantCounters(Counters{Rule: "inj", Matched: 2, Passed: 1, Dropped: 1, Injected: 3})
	if r := m.record(1); !r.Injected || r.ID != 0 || r.Out == nil || r.Seq != 7 || r.Side != Server {
		t.Errorf("injected record %+v", r)
	}
	if m.eng.Pending() != 0 || len(m.eng.injections) != 0 || len(m.eng.waiting) != 0 {
		t.Error("injections left over")
	}
}

// A waiting injection whose condition never comes true is given up at its timeout (or
// sent then with SendOnTimeout); Close gives up the rest; a failed injection is recorded
// as dropped.
func TestInjectGiveUp(t *testing.T) {
	never := func(*Conn) bool { return false }
	m := newMHarness(t, cfgAct("inj", Match{HasFlags: fSYN}, func(c *Context) {
		b, _ := mutate.Reset(c.Conn.Server(), c.Conn.Client(), 7, 8)
		c.Inject(Injection{Data: b, Until: never, Timeout: time.Second})
		c.Inject(Injection{Data: b, Until: never, Timeout: 2 * time.Second, SendOnTimeout: true})
		c.Inject(Injection{Data: b, Delay: time.Hour})
		c.Inject(Injection{Data: b, Until: func(*Conn) bool { panic("boom") }, Timeout: time.Second, SendOnTimeout: true})
	}), Options{})
	m.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	m.clk.Advance(3 * time.Second)
	m.wantEvents(
		"1 client SYN accept inj/test",
		"0 server RST|ACK accept inj/test held=2s injected",
	)
	m.eng.Close()
	if len(m.eng.injections) != 0 || m.clk.Pending() != 0 {
		t.Errorf("%d injections, %d timers after Close", len(m.eng.injections), m.clk.Pending())
	}

	f := newMHarness(t, cfgAct("inj", Match{HasFlags: fSYN}, func(c *Context) {
		b, _ := mutate.Reset(c.Conn.Server(), c.Conn.Client(), 7, 8)
		c.Inject(Injection{Data: b})
	}), Options{})
	f.injectErr = errors.New("no raw socket")
	f.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	f.wantEvents("1 client SYN accept inj/test", "0 server RST|ACK drop inj/test injected")
	f.wantCounters(Counters{Rule: "inj", Matched: 1, Passed: 1})
}

// RewriteClientPort: the client's segments leave from the new port, the server's to that
// port are the connection's and leave to the real one; records are Modified and name the
// rule that acted (the rewriting rule, when none did), whose Modified counter counts them;
// the rewrite ends with the connection.
func TestRewriteClientPort(t *testing.T) {
	alias := netip.MustParseAddrPort("10.0.0.1:39999")
	m := newMHarness(t, cfgOf(rule("reuse", Match{Side: Client, HasFlags: fSYN}, "test", testAction(func(c *Context) {
		c.RewriteClientPort(alias.Port())
	})), rule("count-syn-ack", Match{Side: Server, HasFlags: fSYN}, "pass", &PassAction{})), Options{FinishedTimeout: time.Second})
	m.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	m.handle(seg(testServer, alias, fSYN|fACK, 5000, 1001, 0))
	m.handle(seg(testClient, testServer, fACK, 1001, 5001, 0))
	m.handle(seg(testServer, testClient, fACK, 5001, 1001, 0)) // to the real port: not the server's view
	m.wantEvents(
		"1 client SYN accept reuse/test modified",
		"2 server SYN|ACK accept count-syn-ack/pass modified",
		"3 client ACK accept reuse/test modified",
		"4 server ACK accept",
	)
	if s := m.outSeg(1); s == nil || s.Src() != alias {
		t.Errorf("SYN left as %v", s)
	}
	if s := m.outSeg(2); s == nil || s.Dst() != testClient {
		t.Errorf("SYN|ACK left as %v", s)
	}
	if o := m.observed[2]; o.conn != m.observed[1].conn || o.conn.ServerSideClient() != alias {
		t.Error("the server's SYN|ACK to the alias is not on the client's connection")
	}
	if r := m.record(1); r.Client != testClient || r.Side != Server {
		t.Errorf("SYN|ACK record %+v", r)
	}
	m.wantCounters(Counters{Rule: "reuse", Matched: 1, Passed: 1, Modified: 3}, Counters{Rule: "count-syn-ack", Matched: 1, Passed: 1})
	// Finished and forgotten: the rewrite ends.
	m.handle(seg(testClient, testServer, fRST, 1001, 0, 0))
	m.clk.Advance(2 * time.Second)
	m.eng.Conns()
	m.handle(seg(testServer, alias, fACK, 5001, 1001, 0))
	if r := m.record(5); r.Modified || r.Client == testClient {
		t.Errorf("rewritten after the connection ended: %+v", r)
	}
	if len(m.eng.rewrites) != 0 {
		t.Errorf("%d rewrites left", len(m.eng.rewrites))
	}
}

// A rewrite that cannot be done (no packet bytes) leaves the segment unchanged.
func TestRewriteWithoutData(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("reuse", Match{Side: Client, HasFlags: fSYN}, "test", testAction(func(c *Context) {
		c.RewriteClientPort(1)
	}))), Options{})
	m.curID = 1
	m.eng.Handle(Packet{ID: 1, Seg: seg(testClient, testServer, fSYN, 1000, 0, 0)})
	m.wantEvents("1 client SYN accept reuse/test")
	if len(m.eng.rewrites) != 0 || m.observed[1].conn.ServerSideClient() != testClient {
		t.Errorf("a rewrite started without its SYN: %v", m.eng.rewrites)
	}
}

// The pass path stays free of allocations with rewrites and waiting injections present
// on other connections.
func TestHandlePassAllocsWithRewrites(t *testing.T) {
	eng, p := passPathEngine()
	other := netip.MustParseAddrPort("10.9.9.9:1")
	eng.rewrites[keyOf(other, testServer)] = &rewrite{}
	eng.waiting[keyOf(other, testServer)] = nil
	eng.waiting[keyOf(other, testClient)] = []*injection{{}}
	allocs := testing.AllocsPerRun(1000, func() {
		p.ID++
		p.Seg.Seq += 100
		eng.Handle(p)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Handle on the pass path", allocs)
	}
}

// ClosedFirst: the side whose first FIN did not acknowledge the peer's closed first; in a
// simultaneous close both did.
func TestClosedFirst(t *testing.T) {
	for _, tc := range []struct {
		file           string
		client, server bool
	}{
		{"four-way-close.txt", true, false},
		{"three-way-close.txt", true, false},
		{"simultaneous-close.txt", true, true},
	} {
		m := newMHarness(t, cfgOf(), Options{})
		m.play(loadSeq(t, tc.file))
		c := m.observed[m.nextID].conn
		if c.ClosedFirst(Client) != tc.client || c.ClosedFirst(Server) != tc.server {
			t.Errorf("%s: closed first: client %v, server %v; want %v, %v", tc.file,
				c.ClosedFirst(Client), c.ClosedFirst(Server), tc.client, tc.server)
		}
	}
}

// The rewriting and injecting actions are registered; those that send segments say so
// (Config.Injects), and those that need every segment make the config queue them all.
func TestMutateActionsRegistered(t *testing.T) {
	for name, want := range map[string]struct {
		a          Action
		injects    bool
		needsData  bool
		controlled bool // a rule with has_flags = "SYN" queues control segments only
	}{
		"merge-data-fin": {&MergeDataFINAction{}, false, true, false},
		"split":          {&SplitAction{}, true, false, true},
		"inject-rst":     {&InjectRSTAction{Toward: "client"}, true, false, true},
		"duplicate":      {&DuplicateAction{}, true, false, true},
		"replay":         {&ReplayAction{}, true, true, false},
		"reuse-tuple":    {&ReuseTupleAction{}, false, true, false},
	} {
		a, ok := NewAction(name)
		if !ok || typeName(a) != typeName(want.a) {
			t.Errorf("%s: registered as %v", name, a)
			continue
		}
		cfg := cfgOf(rule("r", Match{HasFlags: fSYN}, name, want.a))
		if cfg.Injects() != want.injects {
			t.Errorf("%s: Injects %v", name, cfg.Injects())
		}
		if nd, ok := want.a.(NeedsData); (ok && nd.NeedsData()) != want.needsData {
			t.Errorf("%s: NeedsData %v", name, ok)
		}
		if got := cfg.QueueScope() == QueueControl; got != want.controlled {
			t.Errorf("%s: queue scope %s", name, cfg.QueueScope())
		}
	}
}
