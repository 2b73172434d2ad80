package verify

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/golden"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

var (
	t0         = time.Date(2025, 11, 22, 10, 0, 0, 0, time.UTC)
	clientAddr = netip.MustParseAddrPort("198.18.1.2:40112")
	serverAddr = netip.MustParseAddrPort("198.18.2.2:8080")
)

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// st is a state entered at a time after t0.
type st struct {
	s  observe.State
	at time.Duration
}

// timeline builds the state entries of a side: each dwells until the next; the last one
// (unless CLOSE) is ongoing until end.
func timeline(end time.Duration, ss ...st) []observe.StateEntry {
	out := make([]observe.StateEntry, len(ss))
	for i, x := range ss {
		e := observe.StateEntry{State: x.s, At: t0.Add(x.at), Source: observe.SourceTrace}
		switch {
		case i+1 < len(ss):
			e.Dwell = observe.Duration(ss[i+1].at - x.at)
		case x.s != observe.Close:
			e.Dwell, e.Ongoing = observe.Duration(end-x.at), true
		}
		out[i] = e
	}
	return out
}

// fourWay is scenario 1 as the observer reports it: the client closes first, the server
// 40 ms later; the client sits in TIME_WAIT at the snapshot (100 ms).
func fourWay() *observe.Connection {
	return &observe.Connection{
		Incarnation: 1,
		FirstSeen:   t0,
		Client: observe.Side{Addr: clientAddr, States: timeline(ms(100),
			st{observe.SynSent, 0}, st{observe.Established, ms(0.2)}, st{observe.FinWait1, ms(10)},
			st{observe.FinWait2, ms(10.1)}, st{observe.TimeWait, ms(50.2)})},
		Server: observe.Side{Addr: serverAddr, States: timeline(ms(100),
			st{observe.SynRecv, ms(0.2)}, st{observe.Established, ms(0.21)}, st{observe.CloseWait, ms(10.1)},
			st{observe.LastAck, ms(50.1)}, st{observe.Close, ms(50.3)})},
	}
}

// second is a second incarnation of fourWay's 4-tuple, 300 ms later: accepted, its
// server in CLOSE_WAIT at the snapshot.
func second() *observe.Connection {
	return &observe.Connection{
		Incarnation: 2,
		FirstSeen:   t0.Add(ms(300)),
		Client: observe.Side{Addr: clientAddr, States: timeline(ms(400),
			st{observe.SynSent, ms(300)}, st{observe.Established, ms(300.2)}, st{observe.FinWait1, ms(310)})},
		Server: observe.Side{Addr: serverAddr, States: timeline(ms(400),
			st{observe.SynRecv, ms(300.2)}, st{observe.Established, ms(300.21)}, st{observe.CloseWait, ms(310.1)})},
	}
}

// threeWay: the server's FIN carries the ACK of the client's FIN; the client passes
// through FIN_WAIT2 within microseconds (as Linux does) or, in the failing variant, not
// at all.
func threeWay(withFinWait2 bool) *observe.Connection {
	c := fourWay()
	cs := []st{{observe.SynSent, 0}, {observe.Established, ms(0.2)}, {observe.FinWait1, ms(10)}}
	if withFinWait2 {
		cs = append(cs, st{observe.FinWait2, ms(50.2)})
	}
	cs = append(cs, st{observe.TimeWait, ms(50.205)})
	c.Client.States = timeline(ms(100), cs...)
	return c
}

// lostFin: the client's first FIN was dropped and retransmitted from FIN_WAIT1.
func lostFin() *observe.Connection {
	c := fourWay()
	c.Client.Retransmits = []observe.RetransmitEntry{{State: observe.FinWait1, At: t0.Add(ms(214))}}
	return c
}

// noTimeWait: scenario 10. The client has no timewait socket; it answers the server's
// retransmitted FIN with a reset, which the server receives in LAST_ACK.
func noTimeWait() *observe.Connection {
	c := fourWay()
	c.Client.States = timeline(ms(500),
		st{observe.SynSent, 0}, st{observe.Established, ms(0.2)}, st{observe.FinWait1, ms(10)},
		st{observe.FinWait2, ms(10.1)}, st{observe.Close, ms(50.2)})
	c.Client.ResetsSent = []observe.ResetEntry{{At: t0.Add(ms(260)), Reason: "NO_SOCKET"}}
	c.Server.States = timeline(ms(500),
		st{observe.SynRecv, ms(0.2)}, st{observe.Established, ms(0.21)}, st{observe.CloseWait, ms(10.1)},
		st{observe.LastAck, ms(50.1)}, st{observe.Close, ms(260.1)})
	c.Server.Retransmits = []observe.RetransmitEntry{{State: observe.LastAck, At: t0.Add(ms(259))}}
	c.Server.ResetsReceived = []observe.ResetEntry{{At: t0.Add(ms(260.05))}}
	return c
}

// leaky: scenario 8. The server never closes: CLOSE_WAIT is ongoing at the snapshot, 2 s on.
func leaky() *observe.Connection {
	c := fourWay()
	c.Server.States = timeline(ms(2010),
		st{observe.SynRecv, ms(0.2)}, st{observe.Established, ms(0.21)}, st{observe.CloseWait, ms(10.1)})
	c.Client.States = timeline(ms(2010),
		st{observe.SynSent, 0}, st{observe.Established, ms(0.2)}, st{observe.FinWait1, ms(10)},
		st{observe.FinWait2, ms(10.1)}, st{observe.Close, ms(1010.1)})
	return c
}

var serverLeak = observe.Leak{
	Local: serverAddr, Remote: clientAddr, Since: t0.Add(ms(10.1)), Age: observe.Duration(ms(2000)),
	Source: observe.SourceTrace, Owner: &observe.Process{Pid: 4242, Comm: "leaky-server"}, RecvQ: 1,
}

// records is an event log: the client's FIN dropped once, then the close.
func records() []rules.Record {
	r := func(side rules.Side, f segment.Flags, n int, rule string, v rules.Verdict) rules.Record {
		return rules.Record{Client: clientAddr, Server: serverAddr, Side: side, Flags: f, Len: n, Rule: rule, Verdict: v}
	}
	return []rules.Record{
		r(rules.Client, segment.SYN, 0, "", rules.Accept),
		r(rules.Server, segment.SYN|segment.ACK, 0, "", rules.Accept),
		r(rules.Client, segment.FIN|segment.ACK|segment.PSH, 100, "drop-first-client-fin", rules.Drop),
		r(rules.Client, segment.FIN|segment.ACK|segment.PSH, 100, "", rules.Accept),
		r(rules.Server, segment.ACK, 0, "", rules.Accept),
		r(rules.Server, segment.FIN|segment.ACK, 0, "", rules.Accept),
		r(rules.Client, segment.ACK, 0, "", rules.Accept),
	}
}

// expect parses the [expect] of a config (target.port and a rule are added).
func expect(t *testing.T, src string) *config.Expect {
	t.Helper()
	cfg, err := config.Parse([]byte("target.port = 8080\n[[rule]]\nname = \"drop-first-client-fin\"\nhas_flags = \"FIN\"\nnth = 1\naction = \"drop\"\n"+src), "t.toml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg.Expect
}

type checkCase struct {
	name   string
	expect string // the [expect] part of a config
	conn   *observe.Connection
	leaks  []observe.Leak
	recs   []rules.Record
	exits  [2]int    // client, server; the zero value means both exited 0
	stops  [2]string // client, server: how the lab stopped it ("" exited by itself)
	incs   []*observe.Connection
	kernel [2]map[string]int64 // client, server counters
	pass   bool
}

func checkCases() []checkCase {
	return []checkCase{
		// states
		{name: "states/four-way both sides", conn: fourWay(), pass: true, expect: `
[expect.client]
states = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
[expect.server]
states = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]`},
		{name: "states/three-way passes FIN_WAIT2", conn: threeWay(true), pass: true, expect: `
[expect.client]
states = ["FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]`},
		{name: "states/missing in the middle", conn: threeWay(false), expect: `
[expect.client]
states = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]`},
		{name: "states/wrong order", conn: fourWay(), expect: `
[expect.client]
states = ["TIME_WAIT", "FIN_WAIT2"]`},
		{name: "states/first missing", conn: fourWay(), expect: `
[expect.server]
states = "CLOSING"`},
		{name: "states/side with no events", conn: func() *observe.Connection {
			c := fourWay()
			c.Server = observe.Side{Addr: serverAddr}
			return c
		}(), expect: `
[expect.server]
states = ["ESTABLISHED", "CLOSE_WAIT"]`},
		{name: "states/NEW_SYN_RECV reads as SYN_RECV", pass: true, conn: func() *observe.Connection {
			c := fourWay()
			c.Server.States[0].State = observe.NewSynRecv
			return c
		}(), expect: `
[expect.server]
states = ["SYN_RECV", "ESTABLISHED"]`},

		// absent
		{name: "absent/holds", conn: fourWay(), pass: true, expect: `
[expect.client]
absent = ["CLOSING", "CLOSE_WAIT"]`},
		{name: "absent/fails", conn: fourWay(), expect: `
[expect.server]
absent = ["TIME_WAIT", "CLOSE_WAIT", "LAST_ACK"]`},

		// retransmissions
		{name: "retransmits_in/holds", conn: lostFin(), pass: true, expect: `
[expect.client]
retransmits_in = ["FIN_WAIT1"]`},
		{name: "retransmits_in/none at all", conn: fourWay(), expect: `
[expect.server]
retransmits_in = ["LAST_ACK"]`},
		{name: "retransmits_in/other states", conn: func() *observe.Connection {
			c := lostFin()
			c.Client.Retransmits = append(c.Client.Retransmits,
				observe.RetransmitEntry{State: observe.FinWait1, At: t0.Add(ms(600))},
				observe.RetransmitEntry{State: observe.Established, At: t0.Add(ms(700))})
			return c
		}(), expect: `
[expect.client]
retransmits_in = ["SYN_SENT", "FIN_WAIT1"]`},
		{name: "retransmits_in/SYN-ACK in SYN_RECV", pass: true, conn: func() *observe.Connection {
			c := fourWay()
			c.Server.Retransmits = []observe.RetransmitEntry{{State: observe.SynRecv, At: t0, SynAck: true}}
			return c
		}(), expect: `
[expect.server]
retransmits_in = "SYN_RECV"`},
		{name: "no_retransmits/holds", conn: fourWay(), pass: true, expect: `
[expect.client]
no_retransmits = true
[expect.server]
no_retransmits = false`},
		{name: "no_retransmits/fails", conn: lostFin(), expect: `
[expect.client]
no_retransmits = true`},

		// resets
		{name: "resets/as expected", conn: noTimeWait(), pass: true, expect: `
[expect.client]
resets_sent = true
resets_received = false
[expect.server]
resets_sent = false
resets_received = true`},
		{name: "resets/want some", conn: fourWay(), expect: `
[expect.client]
resets_sent = true
[expect.server]
resets_received = true`},
		{name: "resets/want none", conn: func() *observe.Connection {
			c := noTimeWait()
			c.Client.ResetsSent = append(c.Client.ResetsSent,
				observe.ResetEntry{At: t0.Add(ms(300)), State: observe.Close, Reason: "TCP_STATE"})
			return c
		}(), expect: `
[expect.client]
resets_sent = false
[expect.server]
resets_received = false`},

		// dwell
		{name: "max_dwell/holds", conn: threeWay(true), pass: true, expect: `
[expect.client]
max_dwell = { FIN_WAIT2 = "10ms", CLOSING = "1ms" }`},
		{name: "max_dwell/fails", conn: fourWay(), expect: `
[expect.client]
max_dwell = { FIN_WAIT2 = "10ms" }`},
		{name: "max_dwell/ongoing", conn: leaky(), expect: `
[expect.server]
max_dwell = { CLOSE_WAIT = "1s" }`},
		{name: "min_dwell/holds, ongoing counts", conn: leaky(), pass: true, expect: `
[expect.server]
min_dwell = { CLOSE_WAIT = "1s" }
[expect.client]
min_dwell = { FIN_WAIT2 = "1s" }`},
		{name: "min_dwell/too short", conn: fourWay(), expect: `
[expect.server]
min_dwell = { CLOSE_WAIT = "1s" }`},
		{name: "min_dwell/ongoing too short", conn: fourWay(), expect: `
[expect.client]
min_dwell = { TIME_WAIT = "60s" }`},
		{name: "min_dwell/never entered", conn: threeWay(false), expect: `
[expect.client]
min_dwell = { FIN_WAIT2 = "1ms" }`},

		// leaks
		{name: "close_wait_leak/reported", conn: leaky(), leaks: []observe.Leak{serverLeak}, pass: true, expect: `
[expect.server]
close_wait_leak = true
[expect.client]
close_wait_leak = false`},
		{name: "close_wait_leak/not reported", conn: fourWay(), expect: `
[expect.server]
close_wait_leak = true`},
		{name: "close_wait_leak/not reported, still in CLOSE_WAIT", conn: leaky(), expect: `
[expect]
leak_threshold = "5s"
[expect.server]
close_wait_leak = true`},
		{name: "close_wait_leak/never in CLOSE_WAIT", conn: fourWay(), expect: `
[expect.client]
close_wait_leak = true`},
		{name: "close_wait_leak/unwanted", conn: leaky(), leaks: []observe.Leak{serverLeak}, expect: `
[expect.server]
close_wait_leak = false`},
		{name: "close_wait_leak/another connection's leak", conn: fourWay(), pass: true, leaks: []observe.Leak{{
			Local: serverAddr, Remote: netip.MustParseAddrPort("198.18.1.2:40999"), Age: observe.Duration(time.Second)}}, expect: `
[expect.server]
close_wait_leak = false`},
		{name: "close_wait_leak/IPv4-mapped addresses", pass: true, conn: leaky(), leaks: []observe.Leak{{
			Local:  netip.MustParseAddrPort("[::ffff:198.18.2.2]:8080"),
			Remote: netip.MustParseAddrPort("[::ffff:198.18.1.2]:40112"), Age: observe.Duration(time.Second)}}, expect: `
[expect.server]
close_wait_leak = true`},

		// exit codes
		{name: "exit/holds", conn: fourWay(), pass: true, exits: [2]int{0, 3}, expect: `
[expect.client]
exit = 0
[expect.server]
exit = 3`},
		{name: "exit/wrong and unknown", conn: fourWay(), exits: [2]int{1, -1}, expect: `
[expect.client]
exit = 0
[expect.server]
exit = 0`},

		// segments
		{name: "segment/counts hold", recs: records(), conn: fourWay(), pass: true, expect: `
[[expect.segment]]
side = "client"
has_flags = "FIN"
min = 2
max = 2
[[expect.segment]]
rule = "drop-first-client-fin"
verdict = "drop"
[[expect.segment]]
has_flags = "RST"
max = 0
[[expect.segment]]
flags = "pure-ack"
max = 5
[[expect.segment]]
has_flags = "FIN"
payload = "some"
min = 1
max = 3`},
		{name: "segment/counts fail", recs: records(), conn: fourWay(), expect: `
[[expect.segment]]
side = "client"
has_flags = "FIN"
verdict = "drop"
min = 2
[[expect.segment]]
side = "server"
has_flags = "FIN"
max = 0
[[expect.segment]]
flags = "pure-ack"
max = 1
[[expect.segment]]
side = "client"
flags = "FIN|ACK"
min = 1
max = 1
[[expect.segment]]
rule = "drop-first-client-fin"
min = 2
max = 4`},
		{name: "segment/injected and modified", recs: append(records(),
			rules.Record{Client: clientAddr, Server: serverAddr, Side: rules.Server, Flags: segment.RST | segment.ACK, Injected: true},
			rules.Record{Client: clientAddr, Server: serverAddr, Side: rules.Server, Flags: segment.FIN | segment.ACK | segment.PSH, Len: 5, Modified: true}),
			conn: fourWay(), expect: `
[[expect.segment]]
side = "server"
flags = "RST|ACK"
injected = true
min = 1
max = 1
[[expect.segment]]
has_flags = "FIN"
payload = "some"
modified = true
min = 1
max = 1
[[expect.segment]]
injected = false
modified = false
max = 7
[[expect.segment]]
side = "client"
injected = true`},
		{name: "segment/empty log", conn: fourWay(), expect: `
[[expect.segment]]
side = "client"
has_flags = "FIN"`},

		// no connection
		{name: "no connection", recs: records(), exits: [2]int{0, 0}, expect: `
[expect.client]
states = ["ESTABLISHED", "FIN_WAIT1"]
resets_sent = false
close_wait_leak = false
exit = 0
[expect.server]
close_wait_leak = true
exit = 1
[[expect.segment]]
side = "client"
has_flags = "FIN"`},
		{name: "no connection, nothing needs one", pass: true, recs: records(), expect: `
[expect.client]
close_wait_leak = false
exit = 0`},
		{name: "empty expect", conn: fourWay(), pass: true, expect: "[expect]"},

		// incarnations of the 4-tuple
		{name: "connection/second accepted", conn: fourWay(), incs: []*observe.Connection{fourWay(), second()}, pass: true, expect: `
[expect]
incarnations = 2
[[expect.connection]]
incarnation = 2
[expect.connection.server]
states = ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"]
[expect.connection.client]
states = ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1"]`},
		{name: "connection/second not there", conn: fourWay(), incs: []*observe.Connection{fourWay()}, expect: `
[expect]
incarnations = 2
[[expect.connection]]
incarnation = 2
[expect.connection.server]
states = ["SYN_RECV", "ESTABLISHED"]`},
		{name: "connection/second's states are its own", conn: fourWay(), incs: []*observe.Connection{fourWay(), second()}, expect: `
[[expect.connection]]
incarnation = 2
[expect.connection.server]
states = ["ESTABLISHED", "LAST_ACK"]
resets_received = true`},

		// kernel counters
		{name: "kernel/within bounds", conn: fourWay(), pass: true,
			kernel: [2]map[string]int64{{"TcpEstabResets": 1}, {"TcpExtPAWSEstab": 1, "TcpPassiveOpens": 2}}, expect: `
[expect.kernel.client]
TcpEstabResets = 1
TcpExtTCPAbortOnTimeout = 0
[expect.kernel.server]
TcpExtPAWSEstab = { min = 1 }
TcpPassiveOpens = { min = 1, max = 2 }`},
		{name: "kernel/out of bounds", conn: fourWay(),
			kernel: [2]map[string]int64{{"TcpEstabResets": 2}, {"TcpPassiveOpens": 3}}, expect: `
[expect.kernel.client]
TcpEstabResets = 1
[expect.kernel.server]
TcpExtPAWSEstab = { min = 1 }
TcpPassiveOpens = { max = 2 }`},
		{name: "kernel/not read", conn: fourWay(), expect: `
[expect.kernel.server]
TcpExtPAWSEstab = 1`},

		// exit: by itself, or stopped by the lab
		{name: "exit/stopped as expected", conn: fourWay(), pass: true, stops: [2]string{"", "SIGTERM, exit status 0"}, expect: `
[expect.server]
exit = "stopped"
[expect.client]
exit = 0`},
		{name: "exit/stopped, want a code", conn: fourWay(), stops: [2]string{"", "SIGKILL, signal: killed"}, exits: [2]int{0, -1}, expect: `
[expect.server]
exit = 0`},
		{name: "exit/exited, want stopped", conn: fourWay(), exits: [2]int{0, 3}, expect: `
[expect.server]
exit = "stopped"`},
	}
}

func TestCheck(t *testing.T) {
	var out strings.Builder
	for _, tt := range checkCases() {
		in := Input{
			Expect:         expect(t, tt.expect),
			Conn:           tt.conn,
			Leaks:          tt.leaks,
			Records:        tt.recs,
			ClientExit:     tt.exits[0],
			ServerExit:     tt.exits[1],
			ClientStop:     tt.stops[0],
			ServerStop:     tt.stops[1],
			Incarnations:   tt.incs,
			ClientCounters: tt.kernel[0],
			ServerCounters: tt.kernel[1],
		}
		fails := Check(in)
		if tt.pass != (len(fails) == 0) {
			t.Errorf("%s: pass = %t, want %t; failures:\n%s", tt.name, len(fails) == 0, tt.pass, strings.Join(fails, "\n"))
		}
		out.WriteString("== " + tt.name + "\n")
		for _, f := range fails {
			if strings.Contains(f, "\n") {
				t.Errorf("%s: failure on several lines: %q", tt.name, f)
			}
			out.WriteString(f + "\n")
		}
	}
	golden.Check(t, "testdata/failures.golden", []byte(out.String()))
}

func TestCheckNil(t *testing.T) {
	if f := Check(Input{Conn: fourWay()}); f != nil {
		t.Errorf("Check without Expect = %q", f)
	}
}

// A hand-built Expect with a state name the loader would have refused.
func TestCheckBadStateName(t *testing.T) {
	e := &config.Expect{Client: &config.SideExpect{
		States:        []string{"FIN_WAIT_1"},
		Absent:        []string{"nope"},
		RetransmitsIn: []string{"x"},
		MaxDwell:      []config.Dwell{{State: "y"}},
		MinDwell:      []config.Dwell{{State: "z"}},
	}}
	fails := Check(Input{Expect: e, Conn: fourWay()})
	if len(fails) != 5 {
		t.Fatalf("failures = %q, want 5", fails)
	}
	for _, f := range fails {
		if !strings.Contains(f, "unknown TCP state") {
			t.Errorf("failure %q", f)
		}
	}
}

func TestPickConnection(t *testing.T) {
	otherClient := netip.MustParseAddrPort("198.18.1.2:40999")
	conn := func(inc int, first time.Duration, client netip.AddrPort, handshake bool, extra int) observe.Connection {
		c := observe.Connection{Incarnation: inc, FirstSeen: t0.Add(first)}
		c.Client.Addr, c.Server.Addr = client, serverAddr
		if handshake {
			c.Client.States = timeline(ms(100), st{observe.SynSent, first}, st{observe.Established, first + ms(1)})
		} else {
			c.Client.States = timeline(ms(100), st{observe.TimeWait, first})
		}
		for range extra {
			c.Server.Retransmits = append(c.Server.Retransmits, observe.RetransmitEntry{State: observe.LastAck})
		}
		return c
	}
	anyClient := netip.AddrPortFrom(clientAddr.Addr(), 0)
	tests := []struct {
		name           string
		conns          []observe.Connection
		client, server netip.AddrPort
		want           int // index in conns, -1 for nil
		n              int
	}{
		{"none", nil, anyClient, serverAddr, -1, 0},
		{"one", []observe.Connection{conn(1, 0, clientAddr, true, 0)}, anyClient, serverAddr, 0, 1},
		{"other server port", []observe.Connection{conn(1, 0, clientAddr, true, 0)}, anyClient, netip.AddrPortFrom(serverAddr.Addr(), 9), -1, 0},
		{"other client address", []observe.Connection{conn(1, 0, clientAddr, true, 0)}, netip.MustParseAddrPort("198.18.9.9:0"), serverAddr, -1, 0},
		{"exact client port", []observe.Connection{conn(1, 0, clientAddr, true, 0), conn(1, ms(1), otherClient, true, 0)},
			otherClient, serverAddr, 1, 1},
		{"any address", []observe.Connection{conn(1, 0, clientAddr, true, 0)}, netip.AddrPort{}, netip.AddrPortFrom(netip.Addr{}, 8080), 0, 1},
		{"mapped", []observe.Connection{conn(1, 0, clientAddr, true, 0)},
			netip.MustParseAddrPort("[::ffff:198.18.1.2]:0"), netip.MustParseAddrPort("[::ffff:198.18.2.2]:8080"), 0, 1},
		{"handshake wins over events", []observe.Connection{conn(1, 0, otherClient, false, 5), conn(1, ms(5), clientAddr, true, 0)},
			anyClient, serverAddr, 1, 2},
		{"first seen among handshakes", []observe.Connection{conn(2, ms(70), clientAddr, true, 3), conn(1, ms(2), clientAddr, true, 0)},
			anyClient, serverAddr, 1, 2},
		{"incarnation breaks ties", []observe.Connection{conn(2, ms(2), clientAddr, true, 0), conn(1, ms(2), clientAddr, true, 0)},
			anyClient, serverAddr, 1, 2},
		{"most events without handshakes", []observe.Connection{conn(1, 0, otherClient, false, 0), conn(1, ms(5), clientAddr, false, 2)},
			anyClient, serverAddr, 1, 2},
		{"SYN-ACK retransmission is a handshake", func() []observe.Connection {
			a, b := conn(1, 0, otherClient, false, 3), conn(1, ms(5), clientAddr, false, 0)
			b.Server.Retransmits = []observe.RetransmitEntry{{State: observe.SynRecv, SynAck: true}}
			return []observe.Connection{a, b}
		}(), anyClient, serverAddr, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := observe.Report{Connections: tt.conns}
			got, n := PickConnection(r, tt.client, tt.server)
			if n != tt.n {
				t.Errorf("candidates = %d, want %d", n, tt.n)
			}
			switch {
			case tt.want < 0 && got != nil:
				t.Errorf("picked %+v, want none", got)
			case tt.want >= 0 && got != &r.Connections[tt.want]:
				t.Errorf("picked %+v, want connection %d", got, tt.want)
			}
		})
	}
}

func TestDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                      "0s",
		1234 * time.Nanosecond: "1µs",
		ms(41.2071):            "41.207ms",
		ms(2103.4):             "2.103s",
		ms(61400):              "1m1s",
	} {
		if got := dur(d); got != want {
			t.Errorf("dur(%v) = %s, want %s", d, got, want)
		}
	}
}

// Results checks each expectation on its own: over every case, their failures are
// exactly Check's, and a result passes when it has none.
func TestResultsMatchCheck(t *testing.T) {
	for _, tt := range checkCases() {
		in := Input{Expect: expect(t, tt.expect), Conn: tt.conn, Leaks: tt.leaks, Records: tt.recs,
			ClientExit: tt.exits[0], ServerExit: tt.exits[1], ClientStop: tt.stops[0], ServerStop: tt.stops[1],
			Incarnations: tt.incs, ClientCounters: tt.kernel[0], ServerCounters: tt.kernel[1]}
		var fromResults []string
		for _, r := range Results(in) {
			if r.Pass != (len(r.Failures) == 0) || r.Key == "" || r.Want == "" || r.Text == "" {
				t.Errorf("%s: result %+v", tt.name, r)
			}
			fromResults = append(fromResults, r.Failures...)
		}
		fromCheck := Check(in)
		// "connection: ... none was observed, so K1, K2 cannot be checked" is one line of
		// Check for the whole section, one per result that needs the connection.
		noConn := func(fails []string) ([]string, int) {
			n := 0
			return slices.DeleteFunc(fails, func(f string) bool {
				if strings.HasPrefix(f, "connection: ") {
					n++
					return true
				}
				return false
			}), n
		}
		fromResults, nr := noConn(fromResults)
		fromCheck, nc := noConn(fromCheck)
		if (nr == 0) != (nc == 0) {
			t.Errorf("%s: %d results say there is no connection, Check %d times", tt.name, nr, nc)
		}
		slices.Sort(fromResults)
		slices.Sort(fromCheck)
		if !slices.Equal(fromResults, fromCheck) {
			t.Errorf("%s: results' failures\n%s\nCheck's\n%s", tt.name, strings.Join(fromResults, "\n"), strings.Join(fromCheck, "\n"))
		}
	}
}
