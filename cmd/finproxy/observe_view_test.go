package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/observe"
)

var (
	vt0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	vc  = netip.MustParseAddrPort("198.18.1.2:40112")
	vs  = netip.MustParseAddrPort("198.18.2.2:8080")
)

func sc(at time.Duration, src, dst netip.AddrPort, old, new observe.State) observe.StateChange {
	return observe.StateChange{EventMeta: observe.EventMeta{Time: vt0.Add(at), Src: src, Dst: dst}, Old: old, New: new, Source: observe.SourceTrace}
}

func TestEventLines(t *testing.T) {
	roles := &roleCache{ports: []uint16{8080}}
	entered := map[[2]netip.AddrPort]time.Time{}
	handoff := sc(3*time.Millisecond, vc, vs, observe.FinWait2, observe.Close)
	handoff.Handoff = true
	tw := sc(300*time.Millisecond, vc, vs, observe.FinWait2, observe.TimeWait)
	tw.Source = observe.SourceDiag
	evs := []observe.Event{
		sc(0, netip.MustParseAddrPort("0.0.0.0:8080"), netip.AddrPort{}, observe.Close, observe.Listen),
		sc(0, netip.AddrPortFrom(vc.Addr(), 0), vs, observe.Close, observe.SynSent),
		sc(time.Millisecond, vc, vs, observe.SynSent, observe.Established),
		sc(time.Millisecond, vs, vc, observe.Listen, observe.SynRecv),
		sc(2*time.Millisecond, vc, vs, observe.Established, observe.FinWait1),
		sc(2*time.Millisecond, vs, vc, observe.SynRecv, observe.CloseWait),
		sc(3*time.Millisecond, vc, vs, observe.FinWait1, observe.FinWait2),
		handoff,
		observe.Retransmit{EventMeta: observe.EventMeta{Time: vt0.Add(250 * time.Millisecond), Src: vs, Dst: vc}, State: observe.LastAck},
		tw,
		observe.ResetSent{EventMeta: observe.EventMeta{Time: vt0.Add(time.Second), Src: vs, Dst: vc}, State: observe.Unknown, Reason: "NO_SOCKET"},
		observe.Marker{Text: "x"},
	}
	var lines []string
	for _, ev := range evs {
		if l, ok := eventLine(ev, roles, entered); ok {
			lines = append(lines, l)
		}
	}
	want := []string{
		"03:04:05.000000  listener 0.0.0.0:8080  CLOSE -> LISTEN",
		"03:04:05.000000  198.18.1.2:* -> 198.18.2.2:8080  client  CLOSE -> SYN_SENT",
		"03:04:05.001000  198.18.1.2:40112 -> 198.18.2.2:8080  client  SYN_SENT -> ESTABLISHED",
		"03:04:05.001000  198.18.1.2:40112 -> 198.18.2.2:8080  server  LISTEN -> SYN_RECV",
		"03:04:05.002000  198.18.1.2:40112 -> 198.18.2.2:8080  client  ESTABLISHED -> FIN_WAIT1  after 1ms in ESTABLISHED",
		"03:04:05.002000  198.18.1.2:40112 -> 198.18.2.2:8080  server  SYN_RECV -> CLOSE_WAIT  after 1ms in SYN_RECV",
		"03:04:05.003000  198.18.1.2:40112 -> 198.18.2.2:8080  client  FIN_WAIT1 -> FIN_WAIT2  after 1ms in FIN_WAIT1",
		"03:04:05.003000  198.18.1.2:40112 -> 198.18.2.2:8080  client  FIN_WAIT2: full socket handed to a timewait socket",
		"03:04:05.250000  198.18.1.2:40112 -> 198.18.2.2:8080  server  retransmit in LAST_ACK",
		"03:04:05.300000  198.18.1.2:40112 -> 198.18.2.2:8080  client  FIN_WAIT2 -> TIME_WAIT  after 297ms in FIN_WAIT2  [sock_diag]",
		"03:04:06.000000  198.18.1.2:40112 -> 198.18.2.2:8080  server  RST sent (NO_SOCKET)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestTableFrame(t *testing.T) {
	wc := &watchConfig{watchFlags: watchFlags{closeWait: 5 * time.Second}, filter: observe.Filter{Ports: []uint16{8080}}}
	now := vt0.Add(10 * time.Second)
	conn := func(port uint16, clientLast, serverLast observe.State, at time.Duration) observe.Connection {
		c := observe.Connection{FirstSeen: vt0}
		c.Client = observe.Side{Addr: netip.AddrPortFrom(vc.Addr(), port), States: []observe.StateEntry{{State: clientLast, At: vt0.Add(at), Dwell: observe.Duration(10*time.Second - at), Ongoing: clientLast != observe.Close}}}
		c.Server = observe.Side{Addr: vs, States: []observe.StateEntry{{State: serverLast, At: vt0.Add(at), Dwell: observe.Duration(10*time.Second - at), Ongoing: serverLast != observe.Close}},
			Owner: &observe.Process{Pid: 42, Comm: "srv"}}
		return c
	}
	tw := conn(1, observe.TimeWait, observe.Close, 8*time.Second)
	tw.Client.Timewait = &observe.Timewait{State: observe.TimeWait, Remaining: observe.Duration(58 * time.Second)}
	rep := observe.Report{Start: vt0, Taken: now, Sources: observe.Sources{Trace: true, Diag: true, NetNS: "srv"}, Connections: []observe.Connection{
		conn(2, observe.Close, observe.Close, time.Second), // finished 9 s ago: hidden
		tw,
		conn(3, observe.FinWait2, observe.CloseWait, 3*time.Second),
	}}
	leak := &watchLeak{Leak: observe.Leak{Local: vs, Remote: netip.AddrPortFrom(vc.Addr(), 3), Age: observe.Duration(7 * time.Second), Owner: &observe.Process{Pid: 42, Comm: "srv"}, RecvQ: 1}, Open: true}
	lines := tableFrame(rep, []*watchLeak{leak}, wc, now, 200, 40)
	out := strings.Join(lines, "\n")
	t.Logf("\n%s", out)
	for _, want := range []string{
		"connections: 2 shown, 1 finished",
		"tracepoints and sock_diag in srv",
		"198.18.1.2:1 -> 198.18.2.2:8080  TIME_WAIT 2.0s (timer 58.0s)  CLOSE",
		"198.18.1.2:3 -> 198.18.2.2:8080  FIN_WAIT2 7.0s",
		"CLOSE_WAIT 7.0s",
		"- / 42 srv",
		"LEAKS",
		"CLOSE_WAIT for 7.0s  198.18.2.2:8080 <- 198.18.1.2:3  pid 42 (srv)  recv-q 1  send-q 0  (open)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("frame lacks %q", want)
		}
	}
	if strings.Contains(out, "198.18.1.2:2 ") || strings.Contains(out, "\x1b") {
		t.Error("frame shows a finished connection, or an escape code")
	}
	// Narrow and short: truncated, the oldest rows cut.
	lines = tableFrame(rep, nil, wc, now, 30, 3)
	if len(lines) > 3 {
		t.Errorf("%d lines for a height of 3", len(lines))
	}
	for _, l := range lines {
		if len([]rune(l)) > 30 {
			t.Errorf("line wider than 30: %q", l)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), "older not shown") {
		t.Errorf("no cut note:\n%s", strings.Join(lines, "\n"))
	}
}

func TestWatchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"watch"},
		{"watch", "--port", "0"},
		{"watch", "--port", "70000"},
		{"watch", "--port", "x"},
		{"watch", "--addr", "nonsense"},
		{"watch", "--port", "1", "--close-wait", "0s"},
		{"watch", "--port", "1", "--interval", "0s"},
		{"watch", "--port", "1", "--observe-netns", "no-such-namespace-here"},
		{"watch", "--port", "1", "extra"},
	} {
		if out, code := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, out)
		}
	}
	// --addr takes addresses and prefixes as [target] addresses does (config.ParsePrefix):
	// a prefix with host bits set is refused with the prefix meant.
	for in, want := range map[string]string{"198.18.2.2": "198.18.2.2/32", "::ffff:10.0.0.1": "10.0.0.1/32", "fd00::/8": "fd00::/8", "10.1.0.0/16": "10.1.0.0/16"} {
		if p, err := config.ParsePrefix(in); err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for in, want := range map[string]string{"fd00::1/8": `did you mean "fd00::/8"?`, "10.1.2.3/16": `did you mean "10.1.0.0/16"?`} {
		out, code := runCLI(t, "watch", "--port", "1", "--addr", in)
		if code != 2 || !strings.Contains(out, want) {
			t.Errorf("watch --addr %s: exit %d, %q; want 2 and %q", in, code, out, want)
		}
	}
}

func TestRunObserveUsage(t *testing.T) {
	for _, args := range [][]string{
		{"run", "-c", "lost-fin", "--observe-netns", "no-such-namespace-here"},
		{"run", "-c", "lost-fin", "--observe-netns", "x", "--no-observe"},
	} {
		if out, code := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, out)
		}
	}
}
