package rules

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

func TestSerialArithmetic(t *testing.T) {
	const top = math.MaxUint32
	for _, tt := range []struct {
		a, b uint32
		lt   bool
	}{
		{1, 2, true},
		{2, 1, false},
		{5, 5, false},
		{top, 0, true},      // 2^32-1 is just before 0
		{0, top, false},     //
		{top - 5, 10, true}, // across the wrap
		{10, top - 5, false},
		{0, 1 << 31, true}, // exactly half the space: undefined in RFC 1982, taken as before
		{0, 1<<31 - 1, true},
	} {
		if got := seqLT(tt.a, tt.b); got != tt.lt {
			t.Errorf("seqLT(%d, %d) = %v", tt.a, tt.b, got)
		}
		if got := seqGEQ(tt.a, tt.b); got == tt.lt {
			t.Errorf("seqGEQ(%d, %d) = %v", tt.a, tt.b, got)
		}
	}
}

func TestKeyOf(t *testing.T) {
	a, b := testClient, testServer
	if keyOf(a, b) != keyOf(b, a) {
		t.Error("keyOf is not symmetric")
	}
	v6 := netip.MustParseAddrPort("[fd00::1]:40000")
	if keyOf(v6, b) == keyOf(a, b) {
		t.Error("distinct tuples share a key")
	}
}

func TestInferSides(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tt := range []struct {
		name         string
		s            segment.Segment
		port         uint16
		addrs        string
		server       netip.AddrPort
		wantInferred bool
	}{
		{"SYN", seg(ap("1.1.1.1:80"), ap("2.2.2.2:5000"), fSYN, 1, 0, 0), 5000, "", ap("2.2.2.2:5000"), false},
		{"SYN|ACK", seg(ap("1.1.1.1:80"), ap("2.2.2.2:5000"), fSYN|fACK, 1, 1, 0), 5000, "", ap("1.1.1.1:80"), false},
		{"to target port", seg(ap("1.1.1.1:80"), ap("2.2.2.2:5000"), fACK, 1, 1, 0), 5000, "", ap("2.2.2.2:5000"), true},
		{"from target port", seg(ap("2.2.2.2:5000"), ap("1.1.1.1:80"), fACK, 1, 1, 0), 5000, "", ap("2.2.2.2:5000"), true},
		{"to the second target port", seg(ap("1.1.1.1:80"), ap("2.2.2.2:5000"), fACK, 1, 1, 0), 6000, "", ap("2.2.2.2:5000"), true},
		{"from the second target port", seg(ap("2.2.2.2:5000"), ap("1.1.1.1:80"), fACK, 1, 1, 0), 6000, "", ap("2.2.2.2:5000"), true},
		{"lower port", seg(ap("1.1.1.1:40000"), ap("2.2.2.2:443"), fACK, 1, 1, 0), 0, "", ap("2.2.2.2:443"), true},
		{"lower port, reversed", seg(ap("2.2.2.2:443"), ap("1.1.1.1:40000"), fACK, 1, 1, 0), 0, "", ap("2.2.2.2:443"), true},
		{"both on target port", seg(ap("1.1.1.1:443"), ap("2.2.2.2:80"), fACK, 1, 1, 0), 7, "", ap("2.2.2.2:80"), true},
		{"same ports", seg(ap("2.2.2.2:7"), ap("1.1.1.1:7"), fACK, 1, 1, 0), 7, "", ap("1.1.1.1:7"), true},
		{"same ports, reversed", seg(ap("1.1.1.1:7"), ap("2.2.2.2:7"), fACK, 1, 1, 0), 7, "", ap("1.1.1.1:7"), true},
		{"target address", seg(ap("2.2.2.2:443"), ap("1.1.1.1:40000"), fACK, 1, 1, 0), 0, "1.1.1.0/24", ap("1.1.1.1:40000"), true},
		{"target address, reversed", seg(ap("1.1.1.1:40000"), ap("2.2.2.2:443"), fACK, 1, 1, 0), 0, "1.1.1.1/32", ap("1.1.1.1:40000"), true},
		{"target v4-mapped address", seg(ap("[::ffff:1.1.1.1]:40000"), ap("2.2.2.2:443"), fACK, 1, 1, 0), 0, "1.1.1.1/32", ap("[::ffff:1.1.1.1]:40000"), true},
		{"port beats address", seg(ap("1.1.1.1:40000"), ap("2.2.2.2:443"), fACK, 1, 1, 0), 443, "1.1.1.1/32", ap("2.2.2.2:443"), true},
		{"both in addresses", seg(ap("1.1.1.1:40000"), ap("1.1.1.2:443"), fACK, 1, 1, 0), 0, "1.1.1.0/24", ap("1.1.1.2:443"), true},
	} {
		target := Target{Port: tt.port}
		if tt.addrs != "" {
			target.Addresses = []netip.Prefix{netip.MustParsePrefix(tt.addrs)}
		}
		if tt.port == 6000 {
			target.Ports = []uint16{5000}
		}
		client, server, inferred := inferSides(&tt.s, &target)
		if server != tt.server || inferred != tt.wantInferred || client == server {
			t.Errorf("%s: client %s server %s inferred %v; want server %s inferred %v",
				tt.name, client, server, inferred, tt.server, tt.wantInferred)
		}
	}
}

// finproxy started between the SYN and the SYN|ACK: the handshake still completes, and
// the client's retransmitted SYN is recognised by the ISN the SYN|ACK implies.
func TestMissedSYN(t *testing.T) {
	tr := newTracker(0, 0, 0, Target{Port: 8080}, 0)
	apply := func(s segment.Segment) (*Conn, Side, Phase) {
		c, side := tr.get(&s, t0)
		p := c.phases(side, &s)
		c.apply(side, &s, t0)
		tr.touch(c)
		return c, side, p
	}
	c, side, p := apply(seg(testServer, testClient, fSYN|fACK, 5000, 1001, 0))
	if side != Server || c.Client() != testClient || c.Inferred() || p != PhaseHandshake {
		t.Fatalf("side %s client %s inferred %v phases %s", side, c.Client(), c.Inferred(), p)
	}
	if c2, _, _ := apply(seg(testClient, testServer, fSYN, 1000, 0, 0)); c2 != c {
		t.Error("the retransmitted SYN started a new incarnation")
	}
	if _, _, p := apply(seg(testClient, testServer, fACK, 1001, 5001, 0)); p != PhaseHandshake {
		t.Errorf("third ACK phases %s", p)
	}
	if !c.HandshakeDone() {
		t.Error("handshake not done")
	}
}

// With only SYN, FIN and RST queued, the handshake's last ACK is never seen: a FIN
// completes it.
func TestHandshakeByFIN(t *testing.T) {
	tr := newTracker(0, 0, 0, Target{Port: 8080}, 0)
	for _, s := range []segment.Segment{
		seg(testClient, testServer, fSYN, 1000, 0, 0),
		seg(testServer, testClient, fSYN|fACK, 5000, 1001, 0),
		seg(testServer, testClient, fFIN|fACK, 5001, 1001, 0),
	} {
		c, side := tr.get(&s, t0)
		c.apply(side, &s, t0)
	}
	s := seg(testClient, testServer, fFIN|fACK, 1001, 5002, 0)
	c, side := tr.get(&s, t0)
	if p := c.phases(side, &s); p != PhaseAfterServerFIN|PhaseAckOfServerFIN {
		t.Errorf("phases %s", p)
	}
}

func TestEventSeen(t *testing.T) {
	c := &Conn{}
	c.sides[1].finSeen = true // the server's FIN only
	for _, tt := range []struct {
		ev     Event
		sender Side
		want   bool
	}{
		{EventPeerFIN, Client, true},
		{EventPeerFIN, Server, false},
		{EventOwnFIN, Server, true},
		{EventOwnFIN, Client, false},
		{EventClientFIN, Server, false},
		{EventServerFIN, Client, true},
		{EventBothFINs, Client, false},
		{EventNone, Client, false},
	} {
		if got := c.EventSeen(tt.ev, tt.sender); got != tt.want {
			t.Errorf("%s from %s: %v", tt.ev, tt.sender, got)
		}
	}
	c.sides[0].finSeen = true
	if !c.EventSeen(EventBothFINs, Client) {
		t.Error("both-fins")
	}
}

func TestConnPhases(t *testing.T) {
	tr := newTracker(0, 0, 0, Target{Port: 8080}, 0)
	s := seg(testClient, testServer, fFIN|fACK, 1000, 5000, 0) // a connection seen from its FIN
	c, side := tr.get(&s, t0)
	c.apply(side, &s, t0)
	ack := seg(testServer, testClient, fACK, 5000, 1001, 0)
	if p := c.Phases(&ack); p != PhaseAfterClientFIN|PhaseAckOfClientFIN {
		t.Errorf("phases %s", p)
	}
	ack.Flags = 0 // no ACK flag: its ack field means nothing
	if p := c.Phases(&ack); p != PhaseAfterClientFIN {
		t.Errorf("phases without ACK flag %s", p)
	}
}

func TestTrackerDefaults(t *testing.T) {
	tr := newTracker(0, 0, 0, Target{}, 0)
	if tr.max != DefaultMaxConns || tr.idle != DefaultIdleTimeout || tr.finished != DefaultFinishedTimeout {
		t.Errorf("defaults %d %v %v", tr.max, tr.idle, tr.finished)
	}
	if tr := newTracker(0, 10*time.Second, 0, Target{}, 0); tr.finished != 10*time.Second {
		t.Errorf("finished timeout %v above the idle one", tr.finished)
	}
}

// Per-rule state of more rules than fit in the connection's inline buffer.
func TestManyRules(t *testing.T) {
	var rs []*Rule
	for range 6 {
		rs = append(rs, rule("", Match{HasFlags: fFIN, Nth: 6}, "drop", &DropAction{}))
	}
	h := newHarness(t, cfgOf(rs...), Options{})
	for range 6 {
		h.handle(seg(testClient, testServer, fFIN|fACK, 1, 1, 0))
	}
	if h.verdicts[6] != Drop || h.verdicts[5] != Accept {
		t.Errorf("verdicts %v", h.verdicts)
	}
}

// The tracker counts each side's payload bytes by sequence number: a retransmission
// counts once, a gap (segments it did not see) counts, from the byte after the SYN.
func TestConnSent(t *testing.T) {
	h := newHarness(t, cfgOf(), Options{})
	h.handle(seg(testClient, testServer, segment.SYN, 1000, 0, 0))
	h.handle(seg(testServer, testClient, segment.SYN|segment.ACK, 5000, 1001, 0))
	h.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1001, 5001, 100))
	h.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1001, 5001, 100)) // retransmitted
	h.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1051, 5001, 100)) // half new
	h.handle(seg(testClient, testServer, segment.ACK|segment.PSH, 1251, 5001, 10))  // after a gap of 100
	h.handle(seg(testClient, testServer, segment.FIN|segment.ACK, 1261, 5001, 0))
	c := h.observed[1].conn
	if got := c.Sent(Client); got != 260 {
		t.Errorf("client sent %d bytes, want 260 (100, 50 new of a retransmission, a gap of 100 and 10)", got)
	}
	if got := c.DataNext(Client); got != 1261 {
		t.Errorf("client's data next %d, want 1261", got)
	}
	if got := c.Sent(Server); got != 0 {
		t.Errorf("server sent %d bytes, want 0", got)
	}
	// Without the handshake, from the first data segment seen.
	h.handle(seg(netipPort(testClient, 40001), testServer, segment.ACK, 7000, 9000, 50))
	if got := h.observed[h.curID].conn.Sent(Client); got != 50 {
		t.Errorf("a connection whose SYN was not seen: %d bytes, want 50", got)
	}
}

func netipPort(a netip.AddrPort, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr(), port)
}
