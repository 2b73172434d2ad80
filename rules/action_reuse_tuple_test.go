package rules

import (
	"net/netip"
	"testing"
	"time"

	"github.com/finproxy/finproxy/mutate"
)

func reuseCfg() *Config {
	return cfgOf(rule("reuse", Match{Side: Client, Flags: fSYN, FlagsSet: true}, "reuse-tuple", &ReuseTupleAction{}))
}

// testdata/seq/time-wait-reuse.txt: connection 2 (port 40001) goes out on port 40000,
// whose server socket is in TIME_WAIT; the server's segments to 40000 are connection 2's
// and go back to 40001.
func TestReuseTupleSequence(t *testing.T) {
	m := newMHarness(t, reuseCfg(), Options{})
	m.play(loadSeq(t, "time-wait-reuse.txt"))
	m.wantEvents(
		"1 client SYN accept reuse/reuse-tuple",
		"2 server SYN|ACK accept",
		"3 client ACK accept",
		"4 client PSH|ACK accept",
		"5 server PSH|ACK accept",
		"6 server FIN|ACK accept",
		"7 client ACK accept",
		"8 client FIN|ACK accept",
		"9 server ACK accept",
		"10 client SYN accept reuse/reuse-tuple modified",
		"11 server SYN|ACK accept reuse/reuse-tuple modified",
		"12 client ACK accept reuse/reuse-tuple modified",
		"13 client PSH|ACK accept reuse/reuse-tuple modified",
		"14 server PSH|ACK accept reuse/reuse-tuple modified",
	)
	p1 := netip.MustParseAddrPort("10.0.0.1:40000")
	p2 := netip.MustParseAddrPort("10.0.0.1:40001")
	if s := m.outSeg(10); s == nil || s.Src() != p1 {
		t.Errorf("the SYN left as %v", s)
	}
	for _, id := range []uint32{11, 14} {
		if s := m.outSeg(id); s == nil || s.Dst() != p2 {
			t.Errorf("segment %d left as %v", id, s)
		}
	}
	c2 := m.observed[14].conn
	if c2 != m.observed[10].conn || c2.Client() != p2 || c2.ServerSideClient() != p1 || c2.Incarnation() != 1 {
		t.Errorf("connection 2: client %v as the server sees it %v", c2.Client(), c2.ServerSideClient())
	}
	if r := m.record(13); r.Client != p2 || r.Side != Server || r.Len != 17 {
		t.Errorf("record %+v", r)
	}
	m.wantCounters(Counters{Rule: "reuse", Matched: 2, Passed: 2, Modified: 5})
}

// No reuse when the server did not close first (no TIME_WAIT on its side), when the
// TIME_WAIT is too old, or when the tuple was reused already; a third connection reuses
// the tuple of the second, whose server closed first too.
func TestReuseTupleCandidates(t *testing.T) {
	lines := loadSeq(t, "time-wait-reuse.txt")
	conn1 := lines[:9]
	client := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(testClient.Addr(), port) }
	syn := func(m *mharness, port uint16, isn uint32) *mutate.Segment {
		id := m.handle(seg(client(port), testServer, fSYN, isn, 0, 0))
		return m.outSeg(id)
	}

	// The client closed first: four-way-close.txt.
	m := newMHarness(t, reuseCfg(), Options{})
	m.play(loadSeq(t, "four-way-close.txt"))
	if s := syn(m, 40001, 9000); s != nil {
		t.Errorf("reused the tuple of a connection the client closed first: %v", s)
	}

	// Too old.
	m = newMHarness(t, cfgOf(rule("reuse", Match{Side: Client, HasFlags: fSYN}, "reuse-tuple", &ReuseTupleAction{MaxAge: Duration(time.Second)})), Options{})
	m.play(conn1)
	m.clk.Advance(2 * time.Second)
	if s := syn(m, 40001, 9000); s != nil {
		t.Errorf("reused a tuple seen 2s ago with max_age 1s: %v", s)
	}

	// In use, then free again.
	m = newMHarness(t, reuseCfg(), Options{})
	m.play(conn1)
	if s := syn(m, 40001, 9000); s == nil || s.Src().Port() != 40000 {
		t.Fatalf("second connection: %v", s)
	}
	if s := syn(m, 40002, 12000); s != nil {
		t.Errorf("third connection reused a tuple in use: %v", s)
	}
	// Connection 2 ends with the server closing first: its tuple (40000) is free again.
	p1 := client(40000)
	m.handle(seg(testServer, p1, fSYN|fACK, 70556, 9001, 0))
	m.handle(seg(client(40001), testServer, fACK, 9001, 70557, 0))
	m.handle(seg(testServer, p1, fFIN|fPSH|fACK, 70557, 9001, 5))
	m.handle(seg(client(40001), testServer, fACK, 9001, 70563, 0))
	m.handle(seg(client(40001), testServer, fFIN|fACK, 9001, 70563, 0))
	m.handle(seg(testServer, p1, fACK, 70563, 9002, 0))
	m.clk.Advance(time.Millisecond)
	if s := syn(m, 40003, 15000); s == nil || s.Src() != p1 {
		t.Errorf("fourth connection: %v, want the tuple of the second", s)
	}
}
