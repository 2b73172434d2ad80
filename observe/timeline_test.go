package observe

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/segment"
)

// The timeline tests drive the assembly with the recorded tracepoint lines of
// testdata/trace and with sock_diag polls made up to match them.

var epoch = time.Unix(0, 0).UTC()

// testClock puts mono 0 at the Unix epoch, so that At - epoch is the mono time.
var testClock = Clock{wall: epoch, mono: 0}

func mono(t time.Time) time.Duration { return t.Sub(epoch) }

func loadEvents(t *testing.T, name string) []Event {
	t.Helper()
	f, err := os.Open("testdata/trace/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ev, err := ParseLine(sc.Text())
		if err != nil {
			continue
		}
		switch ev.(type) {
		case Marker, Lost:
			continue
		}
		evs = append(evs, ev)
	}
	return evs
}

func evMono(ev Event) time.Duration {
	switch e := ev.(type) {
	case StateChange:
		return e.Mono
	case Retransmit:
		return e.Mono
	case ResetSent:
		return e.Mono
	case ResetReceived:
		return e.Mono
	}
	return 0
}

// findState returns the time of the first event of a socket's state change.
func findState(t *testing.T, evs []Event, src string, from, to State) time.Duration {
	t.Helper()
	for _, ev := range evs {
		if e, ok := ev.(StateChange); ok && e.Src == mustAP(src) && e.Old == from && e.New == to {
			return e.Mono
		}
	}
	t.Fatalf("no %v %v -> %v", src, from, to)
	return 0
}

// applyUntil applies the events up to time until (included) and returns the rest.
func applyUntil(tl *timeline, evs []Event, until time.Duration) []Event {
	for len(evs) > 0 && evMono(evs[0]) <= until {
		tl.apply(evs[0])
		evs = evs[1:]
	}
	return evs
}

const testJiffy = 4 * time.Millisecond

// twSock is a timewait socket in state st whose timer (twLen) was set at setAt, as a
// dump at pollAt reports it: whole jiffies left.
func twSock(local, remote string, st State, setAt, pollAt time.Duration) timedSocket {
	left := (setAt + twLen - pollAt) / testJiffy * testJiffy
	return timedSocket{Socket{Family: "AF_INET", Local: mustAP(local), Remote: mustAP(remote), State: st,
		Timer: TimerTimewait, Expires: left}, pollAt, pollAt}
}

func fullSock(local, remote string, st State, inode, recvQ uint32, pollAt time.Duration) timedSocket {
	return timedSocket{Socket{Family: "AF_INET", Local: mustAP(local), Remote: mustAP(remote), State: st,
		Inode: inode, RecvQ: recvQ}, pollAt, pollAt}
}

func applyPoll(tl *timeline, at time.Duration, socks ...timedSocket) {
	tl.applyPoll(poll{start: at, at: at}, socks)
}

func report(t *testing.T, tl *timeline, now time.Duration) []Connection {
	t.Helper()
	conns, _ := tl.report(testClock, now)
	return conns
}

func only(t *testing.T, cs []Connection) Connection {
	t.Helper()
	if len(cs) != 1 {
		t.Fatalf("%d connections, want 1: %s", len(cs), dump(cs))
	}
	return cs[0]
}

func wantStates(t *testing.T, who string, s Side, want ...State) {
	t.Helper()
	if got := states(s); !slices.Equal(got, want) {
		t.Errorf("%s states %v, want %v\n%s", who, got, want, dump(s))
	}
}

func near(a, b, tol time.Duration) bool { return a-b <= tol && b-a <= tol }

const (
	v4client = "127.0.0.1:36666"
	v4server = "127.0.0.1:9101"
)

// The four-way close of v4close.txt: the client (orphaned) gets a timewait FIN_WAIT2
// socket when its FIN is acknowledged, TIME_WAIT when the server's FIN arrives.
func TestTimelineNormalClose(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	handoff := findState(t, evs, v4client, FinWait2, Close)
	lastAck := findState(t, evs, v4server, CloseWait, LastAck)
	tl := newTimeline(Filter{Ports: []uint16{9101}}, true, 0)
	rest := applyUntil(tl, evs, handoff)

	// Between the handoff and the first poll: handed over, not closed.
	c := only(t, report(t, tl, handoff))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
	if !c.Client.HandedToTimewait || c.Client.Timewait != nil {
		t.Errorf("client before a poll: %s", dump(c.Client))
	}
	if c.Client.Addr != mustAP(v4client) || c.Server.Addr != mustAP(v4server) || c.Incarnation != 1 {
		t.Errorf("connection %s", dump(c))
	}

	// Polls every 20 ms: timewait FIN_WAIT2 until the server's FIN, TIME_WAIT after.
	finArrives := lastAck + 50*time.Microsecond
	var p time.Duration
	for p = handoff + 7*time.Millisecond; p < lastAck+100*time.Millisecond; p += 20 * time.Millisecond {
		rest = applyUntil(tl, rest, p)
		sk := twSock(v4client, v4server, FinWait2, handoff, p)
		if p > finArrives {
			sk = twSock(v4client, v4server, TimeWait, finArrives, p)
		}
		server := fullSock(v4server, v4client, CloseWait, 77, 1, p)
		if p > lastAck {
			applyPoll(tl, p, sk)
		} else {
			applyPoll(tl, p, sk, server)
		}
		if p < finArrives {
			c := only(t, report(t, tl, p))
			wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
			if tw := c.Client.Timewait; tw == nil || tw.State != FinWait2 || c.Client.HandedToTimewait {
				t.Fatalf("client in timewait FIN_WAIT2: %s", dump(c.Client))
			}
		}
	}
	applyUntil(tl, rest, p)
	c = only(t, report(t, tl, p))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, TimeWait)
	wantStates(t, "server", c.Server, SynRecv, Established, CloseWait, LastAck, Close)
	tw := c.Client.States[4]
	if tw.Source != SourceDiag || !near(mono(tw.At), finArrives, testJiffy) || !tw.Ongoing {
		t.Errorf("TIME_WAIT %s, want from sock_diag at %v", dump(tw), finArrives)
	}
	if fw2 := c.Client.States[3]; fw2.Source != SourceTrace || time.Duration(fw2.Dwell) != mono(tw.At)-mono(fw2.At) {
		t.Errorf("FIN_WAIT2 %s", dump(fw2))
	}
	if r := time.Duration(c.Client.Timewait.Remaining); !near(r, finArrives+twLen-p, 2*testJiffy) {
		t.Errorf("timewait remaining %v, want %v", r, finArrives+twLen-p)
	}
	if last := c.Server.States[4]; last.Dwell != 0 || last.Ongoing {
		t.Errorf("CLOSE has a dwell: %s", dump(last))
	}
	if c.Server.Socket == nil || c.Server.Socket.Inode != 77 {
		t.Errorf("server socket %s", dump(c.Server.Socket))
	}

	// The timewait socket expires: the client is then really closed.
	end := finArrives + twLen + 10*time.Millisecond
	applyPoll(tl, end)
	c = only(t, report(t, tl, end))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, TimeWait, Close)
	if cl := c.Client.States[5]; !near(mono(cl.At), finArrives+twLen, 2*testJiffy) || !c.Client.Timewait.Gone {
		t.Errorf("CLOSE %s after the timer", dump(c.Client))
	}
	if !tl.finished(tl.conns[0]) {
		t.Error("connection not finished")
	}
}

// Without sock_diag, an orphan's FIN_WAIT2 -> CLOSE is reported as handed to a timewait
// socket, never as CLOSE.
func TestTimelineOrphanWithoutDiag(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, 1<<62)
	c := only(t, report(t, tl, 2000*time.Second))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
	if !c.Client.HandedToTimewait || !c.Client.States[3].Ongoing {
		t.Errorf("client %s", dump(c.Client))
	}
}

// No timewait socket after the handoff (tcp_max_tw_buckets exhausted, say): CLOSE.
func TestTimelineHandoffRefuted(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	handoff := findState(t, evs, v4client, FinWait2, Close)
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, handoff)
	// The namespace polled holds the client's address (the server's listener).
	listener := func(at time.Duration) timedSocket { return fullSock(v4server, "0.0.0.0:0", Listen, 7, 0, at) }
	applyPoll(tl, handoff-time.Millisecond, listener(handoff-time.Millisecond)) // started before: proves nothing
	if c := only(t, report(t, tl, handoff)); !c.Client.HandedToTimewait {
		t.Fatalf("resolved by a poll older than the handoff: %s", dump(c.Client))
	}
	applyPoll(tl, handoff+time.Millisecond, listener(handoff+time.Millisecond))
	c := only(t, report(t, tl, handoff+time.Millisecond))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, Close)
	if cl := c.Client.States[4]; mono(cl.At) != handoff || cl.Source != SourceTrace || c.Client.HandedToTimewait {
		t.Errorf("CLOSE %s", dump(c.Client))
	}
}

// A timewait socket a reset killed between two polls: the peer sent a RST toward the side
// after its handoff (the server, having closed, answers the client's late ACK with one:
// NO_SOCKET), and the next poll finds no timewait socket. That poll proves nothing: the
// side was in TIME_WAIT from the handoff (the server's FIN had come) until the reset.
// Before, it read as FIN_WAIT2 -> CLOSE (a lab run of short-time-wait, 1 of 10).
func TestTimelineHandoffKilledByReset(t *testing.T) {
	cl, srv := mustAP("10.0.0.1:40000"), mustAP("10.0.0.2:80")
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// Both namespaces are polled: a listener in each.
	poll := func(tl *timeline, at time.Duration) {
		applyPoll(tl, at, fullSock("10.0.0.2:80", "0.0.0.0:0", Listen, 7, 0, at), fullSock("10.0.0.1:22", "0.0.0.0:0", Listen, 8, 0, at))
	}
	for _, tc := range []struct {
		name   string
		rst    time.Duration
		client []State
	}{
		// The server's FIN came first: TIME_WAIT from the handoff to the reset.
		{"reset after the handoff", ms(20), []State{SynSent, Established, FinWait1, FinWait2, TimeWait, Close}},
		// A reset before the handoff is no reason: a real close.
		{"reset before the handoff", ms(3) + ms(1)/2, []State{SynSent, Established, FinWait1, FinWait2, Close}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTimeline(Filter{}, true, 0)
			poll(tl, 0)
			ev := func(at time.Duration, src, dst netip.AddrPort, from, to State) {
				tl.apply(StateChange{EventMeta: EventMeta{Mono: at, Src: src, Dst: dst}, Old: from, New: to})
			}
			ev(ms(1), cl, srv, Close, SynSent)
			ev(ms(1)+1, srv, cl, Listen, SynRecv)
			ev(ms(1)+2, srv, cl, SynRecv, Established)
			ev(ms(1)+3, cl, srv, SynSent, Established)
			ev(ms(2), cl, srv, Established, FinWait1)
			ev(ms(2)+1, srv, cl, Established, CloseWait)
			ev(ms(3), srv, cl, CloseWait, LastAck)
			ev(ms(3)+1, cl, srv, FinWait1, FinWait2)
			if tc.rst < ms(4) {
				tl.apply(ResetSent{EventMeta: EventMeta{Mono: tc.rst, Src: srv, Dst: cl}, State: LastAck, Reason: "NOT_SPECIFIED"})
			}
			ev(ms(4), cl, srv, FinWait2, Close) // the handoff
			ev(ms(5), srv, cl, LastAck, Close)
			if tc.rst > ms(4) {
				tl.apply(ResetSent{EventMeta: EventMeta{Mono: tc.rst, Src: srv, Dst: cl}, State: Close, Reason: "NO_SOCKET"})
			}
			poll(tl, ms(30))
			c := only(t, report(t, tl, ms(30)))
			wantStates(t, "client", c.Client, tc.client...)
			if c.Client.HandedToTimewait {
				t.Errorf("still handed to timewait:\n%s", dump(c.Client))
			}
			if n := len(c.Client.States); tc.rst > ms(4) && n == 6 {
				if tw, end := c.Client.States[4], c.Client.States[5]; mono(tw.At) != ms(4) || mono(end.At) != tc.rst || end.Source != SourceTrace {
					t.Errorf("TIME_WAIT at %v, CLOSE at %v; want %v, %v\n%s", mono(tw.At), mono(end.At), ms(4), tc.rst, dump(c.Client))
				}
			}
		})
	}
}

// A handoff in a namespace sock_diag does not poll (it never listed a socket of that
// address) is neither confirmed nor refuted by the polls that miss its timewait socket;
// the connection counts as finished. A later sighting still confirms it.
func TestTimelineHandoffUncovered(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	handoff := findState(t, evs, v4client, FinWait2, Close)
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, 1<<62)
	other := fullSock("10.9.9.9:9101", "0.0.0.0:0", Listen, 7, 0, handoff+time.Millisecond)
	applyPoll(tl, handoff+time.Millisecond, other)
	applyPoll(tl, handoff+2*time.Millisecond, other)
	c := only(t, report(t, tl, handoff+2*time.Millisecond))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
	if !c.Client.HandedToTimewait || c.Client.Timewait != nil {
		t.Errorf("client %s, want handed to timewait, unconfirmed", dump(c.Client))
	}
	if !tl.finished(tl.conns[0]) {
		t.Error("connection not finished: it would never be evicted")
	}
	at := handoff + 3*time.Millisecond
	applyPoll(tl, at, twSock(v4client, v4server, TimeWait, handoff, at))
	c = only(t, report(t, tl, at))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, TimeWait)
	if c.Client.HandedToTimewait || c.Client.Timewait == nil {
		t.Errorf("client %s, want its timewait socket", dump(c.Client))
	}
}

// A reset received in FIN_WAIT2 closes the socket: no timewait.
func TestTimelineResetInFinWait2(t *testing.T) {
	c, s := mustAP("10.0.0.1:5000"), mustAP("10.0.0.2:80")
	meta := func(at time.Duration) EventMeta { return EventMeta{Mono: at, Src: c, Dst: s} }
	tl := newTimeline(Filter{}, true, 0)
	for _, ev := range []Event{
		StateChange{EventMeta: meta(1 * time.Second), Old: SynSent, New: Established},
		StateChange{EventMeta: meta(2 * time.Second), Old: Established, New: FinWait1},
		StateChange{EventMeta: meta(3 * time.Second), Old: FinWait1, New: FinWait2},
		ResetReceived{EventMeta: meta(4 * time.Second)},
		StateChange{EventMeta: meta(4*time.Second + 1), Old: FinWait2, New: Close},
	} {
		tl.apply(ev)
	}
	cn := only(t, report(t, tl, 5*time.Second))
	wantStates(t, "client", cn.Client, Established, FinWait1, FinWait2, Close)
	if len(cn.Client.ResetsReceived) != 1 || cn.Client.HandedToTimewait {
		t.Errorf("client %s", dump(cn.Client))
	}
}

// sock_diag may see the timewait socket before the tracepoint's handoff is read.
func TestTimelineTimewaitSeenFirst(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	handoff := findState(t, evs, v4client, FinWait2, Close)
	tl := newTimeline(Filter{}, true, 0)
	rest := applyUntil(tl, evs, handoff-1)
	applyPoll(tl, handoff+time.Millisecond, twSock(v4client, v4server, FinWait2, handoff, handoff+time.Millisecond))
	applyUntil(tl, rest, handoff)
	c := only(t, report(t, tl, handoff+time.Millisecond))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
	if c.Client.HandedToTimewait || c.Client.Timewait == nil || c.Client.Timewait.State != FinWait2 {
		t.Errorf("client %s", dump(c.Client))
	}
}

// threeway.txt: the server's FIN+ACK reaches the client in FIN_WAIT1: FIN_WAIT1 ->
// FIN_WAIT2 -> CLOSE in one segment, the timewait socket born in TIME_WAIT.
func TestTimelineThreeWay(t *testing.T) {
	evs := loadEvents(t, "threeway.txt")
	cl, sv := "127.0.0.1:50584", "127.0.0.1:9108"
	handoff := findState(t, evs, cl, FinWait2, Close)
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, 1<<62)
	p := handoff + 13*time.Millisecond
	applyPoll(tl, p, twSock(cl, sv, TimeWait, handoff, p))
	c := only(t, report(t, tl, p))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, TimeWait)
	wantStates(t, "server", c.Server, SynRecv, Established, CloseWait, LastAck, Close)
	if tw := c.Client.States[4]; mono(tw.At) != handoff || tw.Source != SourceTrace {
		t.Errorf("TIME_WAIT %s, want at the handoff %v", dump(tw), handoff)
	}
}

// lastack.txt: the client's ACK of the server's FIN is lost twice; the server
// retransmits from LAST_ACK and the client's TIME_WAIT timer restarts each time.
func TestTimelineLastAckRetransmit(t *testing.T) {
	evs := loadEvents(t, "lastack.txt")
	cl, sv := "127.0.0.1:40105", "127.0.0.1:9105"
	handoff := findState(t, evs, cl, FinWait2, Close)
	lastAck := findState(t, evs, sv, CloseWait, LastAck)
	var retrans []time.Duration
	for _, ev := range evs {
		if r, ok := ev.(Retransmit); ok {
			retrans = append(retrans, r.Mono)
		}
	}
	if len(retrans) != 2 {
		t.Fatalf("fixture has %d retransmissions", len(retrans))
	}
	sets := append([]time.Duration{lastAck}, retrans...) // when the client's timer was set
	tl := newTimeline(Filter{}, true, 0)
	rest := evs
	var p time.Duration
	for p = handoff + 5*time.Millisecond; p < retrans[1]+300*time.Millisecond; p += 20 * time.Millisecond {
		rest = applyUntil(tl, rest, p)
		sk := twSock(cl, sv, FinWait2, handoff, p)
		for _, s := range sets {
			if s < p {
				sk = twSock(cl, sv, TimeWait, s, p)
			}
		}
		applyPoll(tl, p, sk)
	}
	c := only(t, report(t, tl, p))
	wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2, TimeWait)
	wantStates(t, "server", c.Server, SynRecv, Established, CloseWait, LastAck, Close)
	if len(c.Server.Retransmits) != 2 || c.Server.Retransmits[0].State != LastAck || c.Server.Retransmits[1].State != LastAck {
		t.Errorf("server retransmits %s", dump(c.Server.Retransmits))
	}
	if tw := c.Client.States[4]; !near(mono(tw.At), lastAck, testJiffy) {
		t.Errorf("TIME_WAIT at %v, want %v", mono(tw.At), lastAck)
	}
	rs := c.Client.Timewait.Restarts
	if len(rs) != 2 {
		t.Fatalf("restarts %s, want 2", dump(rs))
	}
	for i, r := range rs {
		if !near(mono(r), retrans[i], testJiffy) {
			t.Errorf("restart %d at %v, want %v", i, mono(r), retrans[i])
		}
	}
}

// A sighting whose time left reads long (the kernel's jiffies behind the clock during the
// dump, as on a loaded VM) is no restart: a restart happens after the previous sighting,
// so the new deadline must lie a full TIME_WAIT after it. CI: a restart 330 ms after the
// last real one, matching no retransmission.
func TestTimelineTimewaitLaggingDump(t *testing.T) {
	cl, sv := "127.0.0.1:40105", "127.0.0.1:9105"
	tl := newTimeline(Filter{}, false, 0)
	set := 100 * time.Millisecond
	for _, p := range []time.Duration{set + 20*time.Millisecond, set + 300*time.Millisecond} {
		applyPoll(tl, p, twSock(cl, sv, TimeWait, set, p))
	}
	// 330 ms later the dump says 40 ms more than the timer has left.
	p := set + 630*time.Millisecond
	lagging := twSock(cl, sv, TimeWait, set+40*time.Millisecond, p)
	applyPoll(tl, p, lagging)
	// A real restart at +900 ms is still seen.
	restart := set + 900*time.Millisecond
	for _, p := range []time.Duration{restart + 20*time.Millisecond, restart + 200*time.Millisecond} {
		applyPoll(tl, p, twSock(cl, sv, TimeWait, restart, p))
	}
	c := only(t, report(t, tl, restart+200*time.Millisecond))
	rs := c.Client.Timewait.Restarts
	if len(rs) != 1 || !near(mono(rs[0]), restart, 20*time.Millisecond) {
		t.Errorf("restarts %s, want one at %v", dump(rs), restart)
	}
}

// A side in CLOSE_WAIT past the threshold is a leak until it closes.
func TestTimelineCloseWaitLeak(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	closeWait := findState(t, evs, v4server, Established, CloseWait)
	lastAck := findState(t, evs, v4server, CloseWait, LastAck)
	tl := newTimeline(Filter{}, true, 0)
	rest := applyUntil(tl, evs, lastAck-1)
	p := closeWait + 10*time.Millisecond
	applyPoll(tl, p, fullSock(v4server, v4client, CloseWait, 4242, 1, p))
	const threshold = 50 * time.Millisecond
	if ls := tl.leaks(testClock, closeWait+threshold-1, threshold); len(ls) != 0 {
		t.Errorf("leak before the threshold: %s", dump(ls))
	}
	tl.setOwner(4242, Process{Pid: 42, Comm: "server"})
	ls := tl.leaks(testClock, closeWait+threshold, threshold)
	if len(ls) != 1 {
		t.Fatalf("leaks %s, want one", dump(ls))
	}
	l := ls[0]
	if l.Local != mustAP(v4server) || l.Remote != mustAP(v4client) || mono(l.Since) != closeWait ||
		time.Duration(l.Age) != threshold || l.Source != SourceTrace || l.Inode != 4242 || l.RecvQ != 1 ||
		l.Owner == nil || l.Owner.Pid != 42 {
		t.Errorf("leak %s", dump(l))
	}
	// Gone from sock_diag without a CLOSE (events lost): not reported.
	applyPoll(tl, p+20*time.Millisecond)
	if ls := tl.leaks(testClock, lastAck, threshold); len(ls) != 0 {
		t.Errorf("leak of a socket sock_diag no longer sees: %s", dump(ls))
	}
	applyPoll(tl, p+40*time.Millisecond, fullSock(v4server, v4client, CloseWait, 4242, 1, p+40*time.Millisecond))
	applyUntil(tl, rest, 1<<62)
	if ls := tl.leaks(testClock, lastAck+time.Second, threshold); len(ls) != 0 {
		t.Errorf("leak after close: %s", dump(ls))
	}
}

// A CLOSE_WAIT socket older than the Observer: seen by sock_diag only, from its first
// sighting (taken on the second, to give the tracepoint the first word).
func TestTimelineLeakSeenByDiagOnly(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	s, c := "127.0.0.1:80", "127.0.0.1:50000"
	applyPoll(tl, 1*time.Second, fullSock(s, c, CloseWait, 9, 0, 1*time.Second))
	if cs := report(t, tl, time.Second); len(cs[0].Server.States) != 0 {
		t.Errorf("state taken on the first sighting: %s", dump(cs))
	}
	applyPoll(tl, 2*time.Second, fullSock(s, c, CloseWait, 9, 0, 2*time.Second))
	ls := tl.leaks(testClock, 3*time.Second, time.Second)
	if len(ls) != 1 || ls[0].Source != SourceDiag || mono(ls[0].Since) != time.Second || ls[0].Local != mustAP(s) {
		t.Errorf("leaks %s", dump(ls))
	}
}

func TestTimelineRefused(t *testing.T) {
	tl := newTimeline(Filter{Ports: []uint16{9104}}, true, 0)
	applyUntil(tl, loadEvents(t, "refused.txt"), 1<<62)
	c := only(t, report(t, tl, 1300*time.Second))
	wantStates(t, "client", c.Client, SynSent, Close)
	wantStates(t, "server", c.Server)
	if len(c.Client.ResetsReceived) != 1 || len(c.Server.ResetsSent) != 1 ||
		c.Server.ResetsSent[0].Reason != "NO_SOCKET" || c.Server.ResetsSent[0].State != Unknown {
		t.Errorf("resets: %s", dump(c))
	}
	if c.Server.Addr != mustAP("127.0.0.1:9104") {
		t.Errorf("server %v", c.Server.Addr)
	}
}

// mapped.txt: a dual-stack server (IPv4-mapped addresses) and an IPv4 client are one
// connection; the server aborts.
func TestTimelineMapped(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, loadEvents(t, "mapped.txt"), 1<<62)
	c := only(t, report(t, tl, 1300*time.Second))
	wantStates(t, "client", c.Client, SynSent, Established, Close)
	wantStates(t, "server", c.Server, SynRecv, Established, Close)
	if len(c.Client.ResetsReceived) != 1 || len(c.Server.ResetsSent) != 1 || c.Server.ResetsSent[0].State != Close {
		t.Errorf("resets: %s", dump(c))
	}
}

// synack.txt: the server's SYN-ACK is retransmitted by its request socket before the
// child socket exists.
func TestTimelineSynAck(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, loadEvents(t, "synack.txt"), 1<<62)
	c := only(t, report(t, tl, 1300*time.Second))
	wantStates(t, "server", c.Server, SynRecv, Established, CloseWait, LastAck, Close)
	if rt := c.Server.Retransmits; len(rt) != 1 || !rt[0].SynAck || rt[0].State != SynRecv || !rt[0].At.Before(c.Server.States[0].At) {
		t.Errorf("server retransmits %s", dump(rt))
	}
}

// A new SYN on the 4-tuple of a finished connection starts incarnation 2.
func TestTimelineIncarnations(t *testing.T) {
	evs := loadEvents(t, "lastack.txt")
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, 1<<62)
	for _, ev := range evs {
		switch e := ev.(type) {
		case StateChange:
			e.Mono += 10 * time.Second
			tl.apply(e)
		case Retransmit:
			e.Mono += 10 * time.Second
			tl.apply(e)
		}
	}
	cs := report(t, tl, 1400*time.Second)
	if len(cs) != 2 || cs[0].Incarnation != 1 || cs[1].Incarnation != 2 {
		t.Fatalf("connections %s", dump(cs))
	}
	for _, c := range cs {
		wantStates(t, "client", c.Client, SynSent, Established, FinWait1, FinWait2)
		wantStates(t, "server", c.Server, SynRecv, Established, CloseWait, LastAck, Close)
	}
}

// connect() reports SYN_SENT before choosing the port: concurrent connects to one
// server get their SYN_SENT times in order.
func TestTimelinePendingSynSent(t *testing.T) {
	dst := mustAP("10.0.0.2:80")
	src := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), p) }
	tl := newTimeline(Filter{}, true, 0)
	for _, ev := range []Event{
		StateChange{EventMeta: EventMeta{Mono: 1, Src: src(0), Dst: dst}, Old: Close, New: SynSent},
		StateChange{EventMeta: EventMeta{Mono: 2, Src: src(0), Dst: dst}, Old: Close, New: SynSent},
		StateChange{EventMeta: EventMeta{Mono: 3, Src: src(1000), Dst: dst}, Old: SynSent, New: Established},
		StateChange{EventMeta: EventMeta{Mono: 4, Src: src(1001), Dst: dst}, Old: SynSent, New: Established},
	} {
		tl.apply(ev)
	}
	cs := report(t, tl, 10)
	if len(cs) != 2 {
		t.Fatalf("connections %s", dump(cs))
	}
	for i, c := range cs {
		wantStates(t, "client", c.Client, SynSent, Established)
		if mono(c.Client.States[0].At) != time.Duration(i+1) || c.Client.Addr != src(uint16(1000+i)) || c.Server.Addr != dst {
			t.Errorf("connection %d: %s", i, dump(c))
		}
	}
	if len(tl.pendingSyn) != 0 {
		t.Errorf("pending SYN_SENT left: %v", tl.pendingSyn)
	}
}

// sock_diag saw the connection first and guessed the roles wrong; the tracepoint's
// SYN_SENT sets them right.
func TestTimelineRoleSwap(t *testing.T) {
	a, b := "10.0.0.1:40000", "10.0.0.2:50000"
	tl := newTimeline(Filter{}, true, 0)
	applyPoll(tl, 1, fullSock(b, a, Established, 1, 0, 1)) // b guessed client (higher port)
	tl.apply(StateChange{EventMeta: EventMeta{Mono: 2, Src: mustAP(b), Dst: mustAP(a)}, Old: SynSent, New: Established})
	c := only(t, report(t, tl, 3))
	if c.Client.Addr != mustAP(b) || c.Server.Addr != mustAP(a) {
		t.Errorf("roles: %s", dump(c))
	}
}

// Without the tracepoints every state comes from the polls.
func TestTimelineDiagOnly(t *testing.T) {
	tl := newTimeline(Filter{}, false, 0)
	cl, sv := "127.0.0.1:50000", "127.0.0.1:80"
	ms := time.Millisecond
	applyPoll(tl, 100*ms, fullSock(cl, sv, Established, 1, 0, 100*ms), fullSock(sv, cl, Established, 2, 0, 100*ms),
		timedSocket{Socket{Local: mustAP(sv), State: Listen, Inode: 3}, 100 * ms, 100 * ms})
	applyPoll(tl, 120*ms, fullSock(cl, sv, FinWait2, 1, 0, 120*ms), fullSock(sv, cl, CloseWait, 2, 1, 120*ms))
	applyPoll(tl, 140*ms, twSock(cl, sv, TimeWait, 130*ms, 140*ms))
	c := only(t, report(t, tl, 150*ms))
	wantStates(t, "client", c.Client, Established, FinWait2, TimeWait)
	wantStates(t, "server", c.Server, Established, CloseWait, Close)
	if tw := c.Client.States[2]; !near(mono(tw.At), 130*ms, testJiffy) || tw.Source != SourceDiag {
		t.Errorf("TIME_WAIT %s", dump(tw))
	}
	if c.Server.States[2].Source != SourceDiag || mono(c.Server.States[2].At) != 140*ms {
		t.Errorf("server CLOSE %s", dump(c.Server.States[2]))
	}
	if tl.out == nil {
		t.Error("no derived events")
	}
	for _, ev := range tl.out {
		if e := ev.(StateChange); e.Source != SourceDiag {
			t.Errorf("derived event %+v", e)
		}
	}
}

// Many live connections (a churn's TIME_WAIT ones, live for a minute) cost a bounded number
// of eviction scans each: before, every maxConns/8 new connections scanned them all
// (20,000 connections: 12.5M scans; now under 10 per connection).
func TestTimelineEvictionScansBounded(t *testing.T) {
	tl := newTimeline(Filter{}, true, 64)
	const n = 20000
	for i := range n {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i))
		tl.apply(StateChange{EventMeta: EventMeta{Mono: time.Duration(i) * time.Microsecond, Src: src, Dst: mustAP("10.0.0.2:80")},
			Old: SynSent, New: Established})
	}
	if len(tl.conns) != n {
		t.Fatalf("%d connections kept, want all %d (none finished)", len(tl.conns), n)
	}
	if tl.scanned > 10*n {
		t.Errorf("eviction looked at %d connections for %d new ones", tl.scanned, n)
	}
}

func TestTimelineFilterAndEviction(t *testing.T) {
	tl := newTimeline(Filter{Ports: []uint16{9999}}, true, 0)
	applyUntil(tl, loadEvents(t, "v4close.txt"), 1<<62)
	if len(tl.conns) != 0 || tl.filtered == 0 {
		t.Errorf("filtered: %d conns, %d filtered", len(tl.conns), tl.filtered)
	}
	tl = newTimeline(Filter{}, true, 8)
	for i := range 20 {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i))
		dst := mustAP("10.0.0.2:80")
		at := time.Duration(i) * time.Second
		tl.apply(StateChange{EventMeta: EventMeta{Mono: at, Src: src, Dst: dst}, Old: SynSent, New: Established})
		if i%2 == 0 {
			tl.apply(StateChange{EventMeta: EventMeta{Mono: at + 1, Src: src, Dst: dst}, Old: Established, New: Close})
		}
	}
	if tl.evicted == 0 || len(tl.conns) >= 20 {
		t.Errorf("%d connections kept, %d evicted", len(tl.conns), tl.evicted)
	}
	open := 0
	for _, c := range tl.conns {
		if !tl.finished(c) {
			open++
		}
	}
	if open != 10 {
		t.Errorf("%d open connections kept, want all 10", open)
	}
}

func TestTimelineAnnotate(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, loadEvents(t, "v4close.txt"), 1<<62)
	tl.annotate(noteRec{at: 1286 * time.Second, src: mustAP(v4server), dst: mustAP(v4client), text: "drop FIN"})
	tl.annotate(noteRec{at: 1285 * time.Second, src: mustAP(v4client), dst: mustAP(v4server), text: "pass SYN"})
	// A segment's record comes without a text (its reader writes one) and is reported
	// as it was given.
	seg := &eventlog.Record{Side: eventlog.Client, Flags: segment.ACK, Seq: 5, Verdict: eventlog.Accept}
	tl.annotate(noteRec{at: 1287 * time.Second, src: mustAP(v4client), dst: mustAP(v4server), rec: seg})
	c := only(t, report(t, tl, 1300*time.Second))
	if len(c.Notes) != 3 || c.Notes[0].Text != "pass SYN" || c.Notes[1].Text != "drop FIN" || c.Notes[2].Text != "" {
		t.Errorf("notes %s", dump(c.Notes))
	}
	if c.Notes[0].Record != nil || c.Notes[2].Record == nil || !reflect.DeepEqual(*c.Notes[2].Record, *seg) {
		t.Errorf("records %v, %v; want none, then %+v", c.Notes[0].Record, c.Notes[2].Record, *seg)
	}
}

// The records of a connection's segments are kept compactly (without the 4-tuple, the
// names numbered) and reported exactly as they were given, whatever they hold; and a
// note keeps no reference to its caller's record.
func TestTimelineAnnotateRecords(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, loadEvents(t, "v4close.txt"), 1<<62)
	cl, sv := mustAP(v4client), mustAP(v4server)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(cl.Addr().As16()), cl.Port())
	recs := []*eventlog.Record{
		{ID: 7, Time: 1e18, VerdictTime: 1e18 + 5, Client: cl, Server: sv, Incarnation: 1, Side: eventlog.Client,
			Flags: segment.SYN, Seq: 4e9, Rule: "pass-syn", Action: "pass", Verdict: eventlog.Accept, HeldNS: 5},
		{ID: 8, Time: 2e18, VerdictTime: 2e18 + 9, Client: cl, Server: sv, Incarnation: 2, Side: eventlog.Server,
			Flags: segment.SYN | segment.ACK, Seq: 1, Ack: 4e9 + 1, Len: 1 << 20, Rule: "delay-synack", Action: "delay",
			Verdict: eventlog.Drop, HeldNS: 1e9, Modified: true},
		{Time: 3e18, Client: cl, Server: sv, Side: eventlog.Client, Flags: segment.RST | segment.ACK,
			Rule: "pass-syn", Action: "inject-rst", Injected: true},
		// Kept whole: a packet as it left, an address the note does not give, a length
		// out of range. Then a record of neither side.
		{Time: 4e18, Client: cl, Server: sv, Side: eventlog.Client, Modified: true, Out: []byte{0x45, 0}},
		{Time: 5e18, Client: mapped, Server: sv, Side: eventlog.Client},
		{Time: 6e18, Client: cl, Server: sv, Side: eventlog.Client, Len: 1 << 40},
		{Time: 7e18, Client: cl, Server: sv, Side: eventlog.AnySide},
	}
	for i, r := range recs {
		src, dst := cl, sv
		if r.Side == eventlog.Server {
			src, dst = sv, cl
		}
		given := *r
		tl.annotate(noteRec{at: time.Duration(1290+i) * time.Second, src: src, dst: dst, rec: &given})
		given.Seq, given.Rule = 99, "changed" // the caller's buffer, used again
	}
	c := only(t, report(t, tl, 1300*time.Second))
	if len(c.Notes) != len(recs) {
		t.Fatalf("%d notes, want %d", len(c.Notes), len(recs))
	}
	for i, n := range c.Notes {
		if n.Record == nil || !reflect.DeepEqual(*n.Record, *recs[i]) {
			t.Errorf("note %d: record %+v, want %+v", i, n.Record, *recs[i])
		}
		src := cl
		if recs[i].Side == eventlog.Server {
			src = sv
		}
		if n.Src != src {
			t.Errorf("note %d: src %v, want %v", i, n.Src, src)
		}
	}
}

func TestClock(t *testing.T) {
	c := NewClock()
	now := time.Now()
	m := c.Mono(now)
	if d := m - MonoNow(); d > 0 || d < -time.Second {
		t.Errorf("Mono(now) %v from MonoNow", d)
	}
	if back := c.Time(m); !back.Equal(now) || back.Sub(now) != 0 {
		t.Errorf("Time(Mono(now)) = %v, want %v", back, now)
	}
	// The pairing of the two clocks is good to well under a microsecond.
	if d := time.Since(c.Time(MonoNow())); d < -10*time.Microsecond || d > time.Second {
		t.Errorf("Time(MonoNow()) is %v from time.Now", d)
	}
}

// Scenario 13 on a reused 4-tuple: the SYN of incarnation 2 is retransmitted before its
// SYN_SENT -> ESTABLISHED names the 4-tuple.
func TestTimelineSynRetransmitNewIncarnation(t *testing.T) {
	cl, sv := mustAP("10.0.0.1:40000"), mustAP("10.0.0.2:80")
	m := func(at time.Duration, src, dst netip.AddrPort) EventMeta {
		return EventMeta{Mono: at, Src: src, Dst: dst}
	}
	tl := newTimeline(Filter{}, true, 0)
	for _, ev := range []Event{
		StateChange{EventMeta: m(1, cl, sv), Old: SynSent, New: Established},
		StateChange{EventMeta: m(2, cl, sv), Old: Established, New: Close},
		StateChange{EventMeta: m(3, netip.AddrPortFrom(cl.Addr(), 0), sv), Old: Close, New: SynSent},
		Retransmit{EventMeta: m(4, cl, sv), State: SynSent},
		StateChange{EventMeta: m(5, cl, sv), Old: SynSent, New: Established},
	} {
		tl.apply(ev)
	}
	cs := report(t, tl, 10)
	if len(cs) != 2 {
		t.Fatalf("connections %s", dump(cs))
	}
	wantStates(t, "client 1", cs[0].Client, Established, Close)
	wantStates(t, "client 2", cs[1].Client, SynSent, Established)
	if len(cs[0].Client.Retransmits) != 0 || len(cs[1].Client.Retransmits) != 1 || cs[1].Incarnation != 2 {
		t.Errorf("retransmission on the wrong incarnation: %s", dump(cs))
	}
}

func TestNewWithoutSources(t *testing.T) {
	if _, err := New(Options{NoTrace: true, NoDiag: true}); err == nil {
		t.Error("New without sources succeeded")
	}
	if _, err := New(Options{NoTrace: true, NetNS: "finproxy-no-such-namespace"}); err == nil {
		t.Error("New with a missing namespace and no tracepoints succeeded")
	}
}

// The stream marks the tracepoint's FIN_WAIT2 -> CLOSE of a handoff; other changes to
// CLOSE are not marked.
func TestTimelineHandoffMarked(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	tl := newTimeline(Filter{}, true, 0)
	var marked []StateChange
	for _, ev := range evs {
		out, ok := tl.applyEvent(ev)
		if sc, isState := out.(StateChange); ok && isState && sc.Handoff {
			marked = append(marked, sc)
		}
	}
	if len(marked) != 1 || marked[0].Old != FinWait2 || marked[0].New != Close || marked[0].Src != mustAP(v4client) {
		t.Fatalf("handoffs marked %s, want the client's FIN_WAIT2 -> CLOSE", dump(marked))
	}
}

// Notes beyond maxNotes are dropped from the middle: the first half and the latest stay.
func TestTimelineAnnotateCap(t *testing.T) {
	tl := newTimeline(Filter{}, true, 0)
	c, s := mustAP(v4client), mustAP(v4server)
	const n = maxNotes + 10
	for i := range n {
		tl.annotate(noteRec{at: time.Duration(i+1) * time.Millisecond, src: c, dst: s, text: fmt.Sprint(i), rec: &eventlog.Record{Seq: uint32(i)}})
	}
	cn := only(t, report(t, tl, time.Second))
	if len(cn.Notes) != maxNotes || cn.NotesDropped != 10 {
		t.Fatalf("%d notes, %d dropped; want %d, 10", len(cn.Notes), cn.NotesDropped, maxNotes)
	}
	if cn.Notes[0].Text != "0" || cn.Notes[maxNotes/2-1].Text != fmt.Sprint(maxNotes/2-1) ||
		cn.Notes[maxNotes/2].Text != fmt.Sprint(maxNotes/2+10) || cn.Notes[maxNotes-1].Text != fmt.Sprint(n-1) {
		t.Errorf("kept notes %s ... %s, %s ... %s", cn.Notes[0].Text, cn.Notes[maxNotes/2-1].Text, cn.Notes[maxNotes/2].Text, cn.Notes[maxNotes-1].Text)
	}
	if r := cn.Notes[1].Record; r == nil || r.Seq != 1 {
		t.Errorf("note record %v, want seq 1", r)
	}
}

// A long run: connection after connection, each with its segments noted, through a
// timeline with the default bound. What it keeps stays bounded (the oldest finished
// connections are counted in the summary instead) and nothing is lost from the count.
func TestTimelineLongRunBounded(t *testing.T) {
	for _, diag := range []bool{true, false} {
		t.Run(fmt.Sprintf("sock_diag=%v", diag), func(t *testing.T) {
			const n = 3 * DefaultMaxConnections * 8 // as at 200/s for four minutes
			tl := newTimeline(Filter{}, true, 0)
			srv := mustAP("10.0.0.2:80")
			tl.apply(StateChange{EventMeta: EventMeta{Src: srv}, Old: Close, New: Listen})
			peak := 0
			for i := range n {
				cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i / 60000)}), uint16(1024+i%60000))
				at := time.Duration(i) * 5 * time.Millisecond
				ev := func(d time.Duration, src, dst netip.AddrPort, from, to State) {
					tl.apply(StateChange{EventMeta: EventMeta{Mono: at + d, Src: src, Dst: dst}, Old: from, New: to})
				}
				note := func(d time.Duration, src, dst netip.AddrPort) {
					tl.annotate(noteRec{at: at + d, src: src, dst: dst, text: "segment"})
				}
				ev(0, cl, srv, Close, SynSent)
				note(1, cl, srv)
				ev(2, srv, cl, Listen, SynRecv)
				ev(2, srv, cl, SynRecv, Established)
				ev(3, cl, srv, SynSent, Established)
				ev(4, cl, srv, Established, FinWait1)
				note(5, cl, srv)
				tl.apply(Retransmit{EventMeta: EventMeta{Mono: at + 200*time.Millisecond, Src: cl, Dst: srv}, State: FinWait1})
				ev(201*time.Millisecond, srv, cl, Established, CloseWait)
				ev(202*time.Millisecond, cl, srv, FinWait1, FinWait2)
				ev(203*time.Millisecond, srv, cl, CloseWait, LastAck)
				note(204*time.Millisecond, srv, cl)
				ev(205*time.Millisecond, cl, srv, FinWait2, Close) // handed to a timewait socket
				ev(206*time.Millisecond, srv, cl, LastAck, Close)
				if diag && i%20 == 19 {
					// No timewait socket is seen (tcp_max_tw_buckets exhausted): the handoffs
					// resolve as closes.
					applyPoll(tl, at+300*time.Millisecond)
				}
				peak = max(peak, len(tl.conns))
			}
			limit := DefaultMaxConnections + DefaultMaxConnections/8 + 1
			if peak > limit || len(tl.current) > limit || len(tl.retired) > limit || len(tl.pendingTW) > limit {
				t.Errorf("kept %d connections at most (%d at the end), %d current, %d retired 4-tuples, %d pending handoffs; want at most %d",
					peak, len(tl.conns), len(tl.current), len(tl.retired), len(tl.pendingTW), limit)
			}
			s := tl.summary.report(testClock)
			if s == nil {
				t.Fatal("no summary of the forgotten connections")
			}
			if got := s.Connections + uint64(len(tl.conns)); got != n || s.Connections != tl.evicted {
				t.Errorf("summary %d + kept %d = %d connections, want %d (evicted %d)", s.Connections, len(tl.conns), got, n, tl.evicted)
			}
			if s.Notes != 3*s.Connections || s.Retransmits != s.Connections || s.States[FinWait1] != s.Connections || s.States[CloseWait] != s.Connections {
				t.Errorf("summary %s: want 3 notes, 1 retransmission, one FIN_WAIT1 and one CLOSE_WAIT per connection", dump(s))
			}
			if !s.Oldest.Before(s.Newest) {
				t.Errorf("summary spans %v to %v", s.Oldest, s.Newest)
			}
		})
	}
}

// After a churn, thousands of connections wait out TIME_WAIT: each is followed (its
// timewait socket may yet restart its timer), but a report details only the latest
// DefaultMaxConnections of them and counts the others in its summary, so that the report
// and the time to take it stay bounded.
func TestTimelineReportBoundsTimewait(t *testing.T) {
	const n = 3 * DefaultMaxConnections
	tl := newTimeline(Filter{}, true, 0)
	applyPoll(tl, 0) // sock_diag runs: a handoff is pending until it sees the timewait socket
	srv := mustAP("10.0.0.2:80")
	var socks []timedSocket
	pollAt := time.Duration(n)*time.Millisecond + time.Second
	for i := range n {
		cl := netip.AddrPortFrom(netip.MustParseAddr("10.0.1.1"), uint16(1024+i))
		at := time.Duration(i) * time.Millisecond
		ev := func(d time.Duration, src, dst netip.AddrPort, from, to State) {
			tl.apply(StateChange{EventMeta: EventMeta{Mono: at + d, Src: src, Dst: dst}, Old: from, New: to})
		}
		ev(0, cl, srv, Close, SynSent)
		ev(1, srv, cl, Listen, SynRecv)
		ev(1, srv, cl, SynRecv, Established)
		ev(2, cl, srv, SynSent, Established)
		ev(3, cl, srv, Established, FinWait1)
		ev(4, srv, cl, Established, CloseWait)
		ev(5, cl, srv, FinWait1, FinWait2)
		ev(6, srv, cl, CloseWait, LastAck)
		ev(7, cl, srv, FinWait2, Close) // handed to a timewait socket
		ev(8, srv, cl, LastAck, Close)
		left := (at + 7 + twLen - pollAt) / testJiffy * testJiffy
		socks = append(socks, timedSocket{Socket{Family: "AF_INET", Local: cl, Remote: srv, State: TimeWait,
			Timer: TimerTimewait, Expires: left}, pollAt, pollAt})
	}
	tl.applyPoll(poll{start: pollAt, at: pollAt}, socks)
	if len(tl.twSides) != n || len(tl.conns) != n {
		t.Fatalf("%d timewait sockets followed, %d connections kept; want %d (all live)", len(tl.twSides), len(tl.conns), n)
	}
	conns, sum := tl.report(testClock, pollAt+time.Second)
	if len(conns) != DefaultMaxConnections || sum == nil || sum.Connections != n-DefaultMaxConnections {
		t.Fatalf("report: %d connections in detail, summary %+v; want %d and %d summarised", len(conns), sum, DefaultMaxConnections, n-DefaultMaxConnections)
	}
	if sum.States[TimeWait] != sum.Connections || tl.evicted != 0 {
		t.Errorf("summary %s (evicted %d): want every summarised client in TIME_WAIT, none evicted", dump(sum), tl.evicted)
	}
	// The latest are the ones in detail.
	if got, want := conns[0].Client.Addr.Port(), uint16(1024+n-DefaultMaxConnections); got != want {
		t.Errorf("first connection in detail from port %d, want %d", got, want)
	}
	// Taking a report changes nothing of what is followed.
	if tl.summary.conns != 0 || len(tl.conns) != n {
		t.Errorf("the report evicted: summary %d, %d connections left", tl.summary.conns, len(tl.conns))
	}
}

// Owners found for several inodes are recorded in one pass, each on the side whose full
// socket has that inode; the report's owners and sockets are copies of the timeline's.
func TestTimelineSetOwners(t *testing.T) {
	evs := loadEvents(t, "v4close.txt")
	closeWait := findState(t, evs, v4server, Established, CloseWait)
	tl := newTimeline(Filter{}, true, 0)
	applyUntil(tl, evs, closeWait)
	p := closeWait + 10*time.Millisecond
	applyPoll(tl, p, fullSock(v4client, v4server, FinWait2, 7, 0, p), fullSock(v4server, v4client, CloseWait, 8, 1, p))
	tl.setOwners(map[uint32]Process{7: {Pid: 41, Comm: "client"}, 8: {Pid: 42, Comm: "server"}, 9: {Pid: 43}})
	c := only(t, report(t, tl, p))
	if c.Client.Owner == nil || *c.Client.Owner != (Process{Pid: 41, Comm: "client"}) ||
		c.Server.Owner == nil || *c.Server.Owner != (Process{Pid: 42, Comm: "server"}) {
		t.Fatalf("owners %s, %s", dump(c.Client.Owner), dump(c.Server.Owner))
	}
	if c.Server.Socket == nil || c.Server.Socket.Local != mustAP(v4server) || c.Server.Socket.Remote != mustAP(v4client) ||
		c.Server.Socket.Inode != 8 || c.Server.Socket.RecvQ != 1 || c.Server.Socket.State != CloseWait || c.Server.Socket.Family != "AF_INET" {
		t.Errorf("server socket %s", dump(c.Server.Socket))
	}
	c.Client.Owner.Pid, c.Server.Socket.Inode = 0, 0
	c = only(t, report(t, tl, p))
	if c.Client.Owner.Pid != 41 || c.Server.Socket.Inode != 8 {
		t.Errorf("a report's owner or socket written changed the timeline: %s, %s", dump(c.Client.Owner), dump(c.Server.Socket))
	}
}
