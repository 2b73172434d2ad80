package observe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"golang.org/x/sys/unix"
)

// Privileged tests: each runs real sockets in a namespace of its own and observes them.
// The tracepoints are global, so each test uses a port of its own.

type lab struct {
	t    *testing.T
	ns   *nstest.NS
	o    *Observer
	port uint16
}

func newLab(t *testing.T, port uint16) *lab {
	t.Helper()
	return newLabPolling(t, port, 20*time.Millisecond)
}

// newLabPolling is newLab with the sock_diag period given.
func newLabPolling(t *testing.T, port uint16, poll time.Duration) *lab {
	t.Helper()
	ns := nstest.New(t)
	o, err := New(Options{Filter: Filter{Ports: []uint16{port}}, NetNS: ns.Name, PollInterval: poll})
	if err != nil {
		nstest.Skip(t, fmt.Sprintf("no observation source: %v", err))
	}
	if w := o.Warnings(); len(w) > 0 {
		t.Logf("warnings: %q", w)
	}
	if o.trace == nil || len(o.diags) == 0 {
		o.Close()
		nstest.Skip(t, fmt.Sprintf("needs both tracepoints and sock_diag: %q", o.Warnings()))
	}
	inst := o.Instance()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(inst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("tracefs instance %s left behind (stat: %v)", inst, err)
		}
	})
	return &lab{t: t, ns: ns, o: o, port: port}
}

// listen and dial create sockets inside the namespace.
func (l *lab) listen(network, host string) net.Listener {
	l.t.Helper()
	var ln net.Listener
	err := l.ns.Do(func() (err error) {
		ln, err = net.Listen(network, net.JoinHostPort(host, strconv.Itoa(int(l.port))))
		return err
	})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

func (l *lab) dial(network, host string) (net.Conn, error) {
	var c net.Conn
	err := l.ns.Do(func() (err error) {
		c, err = net.Dial(network, net.JoinHostPort(host, strconv.Itoa(int(l.port))))
		return err
	})
	return c, err
}

// pair makes a connected client and server.
func (l *lab) pair(network, host string) (c, s net.Conn) {
	l.t.Helper()
	ln := l.listen(network, host)
	c, err := l.dial(network, host)
	if err != nil {
		l.t.Fatal(err)
	}
	s, err = ln.Accept()
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// waitFor syncs and snapshots until cond holds (or fails the test after 10 s).
func (l *lab) waitFor(what string, cond func(Report) bool) Report {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if err := l.o.Sync(ctx); err != nil {
			r := l.o.Snapshot()
			l.t.Fatalf("waiting for %s: %v\n%s", what, err, dump(r))
		}
		r := l.o.Snapshot()
		if cond(r) {
			return r
		}
	}
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func findConn(r Report, client, server netip.AddrPort) *Connection {
	for i := range r.Connections {
		c := &r.Connections[i]
		if c.Client.Addr == client && c.Server.Addr == server {
			return c
		}
	}
	return nil
}

func addrOf(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func states(s Side) []State {
	var out []State
	for _, e := range s.States {
		out = append(out, e.State)
	}
	return out
}

func lastState(s Side) State {
	if len(s.States) == 0 {
		return Unknown
	}
	return s.States[len(s.States)-1].State
}

func entry(s Side, st State) *StateEntry {
	for i := range s.States {
		if s.States[i].State == st {
			return &s.States[i]
		}
	}
	return nil
}

// The client closes first; the server reads EOF, then closes.
func TestPrivilegedNormalClose(t *testing.T) {
	for i, tc := range []struct{ network, host string }{{"tcp4", "127.0.0.1"}, {"tcp6", "::1"}} {
		t.Run(tc.network, func(t *testing.T) {
			l := newLab(t, uint16(41010+i))
			c, s := l.pair(tc.network, tc.host)
			ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("server read: %d, %v; want EOF", n, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			r := l.waitFor("client TIME_WAIT and server CLOSE", func(r Report) bool {
				cn := findConn(r, ca, sa)
				return cn != nil && lastState(cn.Client) == TimeWait && lastState(cn.Server) == Close
			})
			cn := findConn(r, ca, sa)
			if got, want := states(cn.Client), []State{SynSent, Established, FinWait1, FinWait2, TimeWait}; !slices.Equal(got, want) {
				t.Errorf("client states %v, want %v\n%s", got, want, dump(cn))
			}
			if got, want := states(cn.Server), []State{SynRecv, Established, CloseWait, LastAck, Close}; !slices.Equal(got, want) {
				t.Errorf("server states %v, want %v\n%s", got, want, dump(cn))
			}
			tw := cn.Client.Timewait
			if tw == nil || tw.State != TimeWait || time.Duration(tw.Remaining) < 50*time.Second || tw.Gone {
				t.Errorf("client timewait %+v, want TIME_WAIT with about 60 s left", tw)
			}
			if cn.Server.Timewait != nil || cn.Server.HandedToTimewait {
				t.Errorf("server has a timewait socket: %s", dump(cn.Server))
			}
			// The client's TIME_WAIT began when the server's FIN arrived, that is when the
			// server entered LAST_ACK (loopback: microseconds later).
			d := entry(cn.Client, TimeWait).At.Sub(entry(cn.Server, LastAck).At)
			if d < -6*time.Millisecond || d > 6*time.Millisecond {
				t.Errorf("client TIME_WAIT at %v from server LAST_ACK, want about 0\n%s", d, dump(cn))
			}
			if cn.Incarnation != 1 || len(r.Connections) != 1 {
				t.Errorf("want one connection, incarnation 1:\n%s", dump(r))
			}
			t.Logf("%s", dump(cn))
		})
	}
}

// A handoff to a timewait socket makes the observer poll at once: with periodic polls 2 s
// apart, the client's TIME_WAIT is still seen within a fraction of that (a TIME_WAIT that a
// RST ends within milliseconds would otherwise never be seen).
func TestPrivilegedHandoffPolledAtOnce(t *testing.T) {
	l := newLabPolling(t, 41015, time.Hour) // capped: a periodic poll every 2 s
	c, s := l.pair("tcp4", "127.0.0.1")
	ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())
	time.Sleep(50 * time.Millisecond) // the first poll is done: the next periodic one is 2 s away
	closed := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read: %v; want EOF", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var r Report
	for time.Since(closed) < 800*time.Millisecond {
		r = l.o.Snapshot()
		if cn := findConn(r, ca, sa); cn != nil && lastState(cn.Client) == TimeWait {
			t.Logf("client TIME_WAIT seen %v after the close; %d polls, %d at once for a handoff",
				time.Since(closed).Round(time.Millisecond), r.Stats.Polls, r.Stats.KickedPolls)
			if r.Stats.KickedPolls == 0 {
				t.Errorf("seen without a poll made for the handoff: %+v", r.Stats)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("client TIME_WAIT not seen within 800 ms of the close (periodic polls 2 s apart)\n%s", dump(r))
}

// A server that never closes after EOF leaks a CLOSE_WAIT socket; one that closes does
// not.
func TestPrivilegedCloseWaitLeak(t *testing.T) {
	for _, closes := range []bool{false, true} {
		t.Run(fmt.Sprintf("server_closes=%v", closes), func(t *testing.T) {
			port := uint16(41020)
			if closes {
				port++
			}
			l := newLab(t, port)
			c, s := l.pair("tcp4", "127.0.0.1")
			ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())
			c.Close()
			if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("server read: %d, %v; want EOF", n, err)
			}
			if closes {
				s.Close()
			}
			l.waitFor("server side settled", func(r Report) bool {
				cn := findConn(r, ca, sa)
				return cn != nil && (lastState(cn.Server) == Close || (lastState(cn.Server) == CloseWait && cn.Server.Socket != nil))
			})
			const threshold = 150 * time.Millisecond
			time.Sleep(threshold)
			leaks := l.o.Leaks(threshold)
			if closes {
				if len(leaks) != 0 {
					t.Fatalf("leaks %s, want none", dump(leaks))
				}
				return
			}
			if len(leaks) != 1 {
				t.Fatalf("leaks %s, want one", dump(leaks))
			}
			lk := leaks[0]
			if lk.Local != sa || lk.Remote != ca || time.Duration(lk.Age) < threshold || lk.Source != SourceTrace {
				t.Errorf("leak %s, want %v <- %v older than %v", dump(lk), sa, ca, threshold)
			}
			if lk.Owner == nil || lk.Owner.Pid != os.Getpid() {
				t.Errorf("leak owner %+v, want pid %d", lk.Owner, os.Getpid())
			} else if want := filepath.Base(os.Args[0]); len(want) > 15 || lk.Owner.Comm != want {
				t.Logf("owner comm %q (binary %q)", lk.Owner.Comm, want)
			}
			if lk.RecvQ != 1 {
				t.Logf("recv_q %d", lk.RecvQ)
			}
			if l.o.Leaks(time.Hour) != nil {
				t.Errorf("a leak over an hour")
			}
		})
	}
}

// An orphaned client socket (closed by its application) becomes a timewait socket in
// FIN_WAIT2 when its FIN is acknowledged, then TIME_WAIT when the server's FIN arrives.
func TestPrivilegedOrphanTimewait(t *testing.T) {
	l := newLab(t, 41030)
	c, s := l.pair("tcp4", "127.0.0.1")
	ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())
	c.Close()
	r := l.waitFor("client timewait FIN_WAIT2", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && cn.Client.Timewait != nil
	})
	cn := findConn(r, ca, sa)
	if got, want := states(cn.Client), []State{SynSent, Established, FinWait1, FinWait2}; !slices.Equal(got, want) {
		t.Errorf("client states %v, want %v\n%s", got, want, dump(cn))
	}
	tw := cn.Client.Timewait
	if tw.State != FinWait2 || time.Duration(tw.Remaining) < 30*time.Second {
		t.Errorf("client timewait %s, want FIN_WAIT2 with its timer (tcp_fin_timeout)", dump(tw))
	}
	if e := entry(cn.Client, FinWait2); e == nil || e.Source != SourceTrace || !e.Ongoing {
		t.Errorf("client FIN_WAIT2 %+v: want from the tracepoint, ongoing", e)
	}
	if lastState(cn.Server) != CloseWait {
		t.Errorf("server %v, want CLOSE_WAIT", states(cn.Server))
	}

	time.Sleep(50 * time.Millisecond)
	s.Close()
	r = l.waitFor("client TIME_WAIT", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && lastState(cn.Client) == TimeWait && lastState(cn.Server) == Close
	})
	cn = findConn(r, ca, sa)
	if got, want := states(cn.Client), []State{SynSent, Established, FinWait1, FinWait2, TimeWait}; !slices.Equal(got, want) {
		t.Errorf("client states %v, want %v\n%s", got, want, dump(cn))
	}
	fw2, tw2 := entry(cn.Client, FinWait2), entry(cn.Client, TimeWait)
	if time.Duration(fw2.Dwell) < 50*time.Millisecond {
		t.Errorf("client FIN_WAIT2 dwell %v, want >= 50ms", time.Duration(fw2.Dwell))
	}
	if tw2.Source != SourceDiag {
		t.Errorf("TIME_WAIT source %q, want sock_diag (from the timewait timer)", tw2.Source)
	}
	if d := tw2.At.Sub(entry(cn.Server, LastAck).At); d < -6*time.Millisecond || d > 6*time.Millisecond {
		t.Errorf("client TIME_WAIT %v after server LAST_ACK, want about 0\n%s", d, dump(cn))
	}
	if tw := cn.Client.Timewait; tw.State != TimeWait || time.Duration(tw.Remaining) < 50*time.Second {
		t.Errorf("client timewait %s", dump(tw))
	}
	t.Logf("%s", dump(cn))
}

// A SYN to a port without a listener is answered with RST by no socket.
func TestPrivilegedRefused(t *testing.T) {
	l := newLab(t, 41040)
	if _, err := l.dial("tcp4", "127.0.0.1"); err == nil {
		t.Fatal("dial succeeded without a listener")
	}
	r := l.waitFor("client CLOSE", func(r Report) bool {
		return len(r.Connections) == 1 && lastState(r.Connections[0].Client) == Close
	})
	cn := r.Connections[0]
	if got, want := states(cn.Client), []State{SynSent, Close}; !slices.Equal(got, want) {
		t.Errorf("client states %v, want %v\n%s", got, want, dump(cn))
	}
	if len(cn.Client.ResetsReceived) != 1 {
		t.Errorf("client resets received %v, want 1", cn.Client.ResetsReceived)
	}
	if len(cn.Server.ResetsSent) != 1 || cn.Server.ResetsSent[0].Reason != "NO_SOCKET" || cn.Server.ResetsSent[0].State != Unknown {
		t.Errorf("server resets sent %s, want one NO_SOCKET", dump(cn.Server.ResetsSent))
	}
	if len(cn.Server.States) != 0 {
		t.Errorf("server states %v, want none (no socket)", states(cn.Server))
	}
}

// Scenario 4 without finproxy: the client's ACK of the server's FIN is dropped, so the
// server retransmits its FIN from LAST_ACK, and the client's timewait socket restarts
// its 2*MSL timer each time it acknowledges it again.
func TestPrivilegedLastAckRetransmit(t *testing.T) {
	nstest.RequireTool(t, "iptables")
	l := newLab(t, 41050)
	c, s := l.pair("tcp4", "127.0.0.1")
	ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())
	c.Close()
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read: %v", err)
	}
	rule := []string{"OUTPUT", "-p", "tcp", "--sport", strconv.Itoa(int(ca.Port())), "--dport", strconv.Itoa(int(sa.Port())),
		"--tcp-flags", "FIN,SYN,RST,ACK", "ACK", "-j", "DROP"}
	l.ns.MustRun(t, "iptables", append([]string{"-A"}, rule...)...)
	s.Close()
	l.waitFor("two retransmissions", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && len(cn.Server.Retransmits) >= 2 && cn.Client.Timewait != nil && len(cn.Client.Timewait.Restarts) >= 1
	})
	l.ns.MustRun(t, "iptables", append([]string{"-D"}, rule...)...)
	l.waitFor("server CLOSE", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && lastState(cn.Server) == Close
	})
	// Later sightings of the timewait socket narrow the time of its last restart.
	time.Sleep(300 * time.Millisecond)
	r := l.waitFor("a sync", func(Report) bool { return true })
	cn := findConn(r, ca, sa)
	for _, rt := range cn.Server.Retransmits {
		if rt.State != LastAck {
			t.Errorf("retransmission in %v, want LAST_ACK", rt.State)
		}
	}
	if got, want := states(cn.Server), []State{SynRecv, Established, CloseWait, LastAck, Close}; !slices.Equal(got, want) {
		t.Errorf("server states %v, want %v", got, want)
	}
	if got, want := states(cn.Client), []State{SynSent, Established, FinWait1, FinWait2, TimeWait}; !slices.Equal(got, want) {
		t.Errorf("client states %v, want %v", got, want)
	}
	// Times inferred from timewait timers are good to a few jiffies plus the delay between the
	// kernel's dump and our clock reading, which grows on a loaded machine (CI runs packages
	// in parallel): 25 ms still tells one retransmission (>= 200 ms apart) from another.
	const tol = 25 * time.Millisecond
	// The entry is timed from a sighting before the first retransmission (~200 ms later)
	// restarts the timer: with polls further apart than that (a CI machine loaded to the
	// point of starving the poll loop) it cannot be, and the observer says so in its stats.
	gap := time.Duration(r.Stats.LongestPollPeriodNS)
	if d := entry(cn.Client, TimeWait).At.Sub(entry(cn.Server, LastAck).At); d < -tol || d > tol {
		if gap < 150*time.Millisecond {
			t.Errorf("client TIME_WAIT %v after server LAST_ACK, want about 0 (polls at most %v apart)", d, gap)
		} else {
			t.Logf("client TIME_WAIT %v after server LAST_ACK: polls were up to %v apart, too far to time it", d, gap)
		}
	}
	// Each restart follows a retransmission of the server's FIN.
	for _, rs := range cn.Client.Timewait.Restarts {
		ok := false
		for _, rt := range cn.Server.Retransmits {
			if d := rs.Sub(rt.At); d > -tol && d < tol {
				ok = true
			}
		}
		if !ok {
			t.Errorf("timer restart at %v matches no retransmission\n%s", rs, dump(cn))
		}
	}
	t.Logf("%s", dump(cn))
}

func TestPrivilegedStaleInstance(t *testing.T) {
	nstest.RequireRoot(t)
	if err := ensureTracefs(); err != nil {
		nstest.Skip(t, err.Error())
	}
	stale := filepath.Join(TracefsRoot, "instances", InstancePrefix+"2147483647-1")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale) })
	l := newLab(t, 41060)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale instance still there: %v", err)
	}
	// Every observer that starts removes stale instances, those of other test packages
	// running at the same time included: which one got there first is not ours to know.
	// That the remover names what it removed is TestRemoveStaleInstances's job.
	found := false
	for _, w := range l.o.Warnings() {
		found = found || strings.Contains(w, stale)
	}
	if !found {
		t.Logf("warnings %q do not name the stale instance: another observer removed it", l.o.Warnings())
	}
}

// Sync asks for a sock_diag poll at once: with a period of seconds (what a costly dump
// makes it) it still returns within a poll's cost, so that a run stops promptly.
func TestPrivilegedSyncPollsAtOnce(t *testing.T) {
	l := newLabPolling(t, 41090, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // the first poll, at Run's start, is done
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := l.o.Sync(ctx); err != nil {
		t.Fatalf("Sync with a 10s poll period: %v after %v", err, time.Since(start))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Sync took %v, want well under the 10s period", took)
	}
}

// Options.Nice: the tracepoint reader and the sock_diag poller each run on a thread of
// their own at that nice value, while the rest of the process keeps its own; when Run
// returns no thread is left at the observer's value, to run other goroutines or start
// threads that inherit it.
func TestPrivilegedObserverNice(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	nice := 7
	o, err := New(Options{Filter: Filter{Ports: []uint16{41090}}, NetNS: ns.Name, PollInterval: 20 * time.Millisecond, Nice: &nice})
	if err != nil {
		t.Fatal(err)
	}
	if o.trace == nil || len(o.diags) == 0 {
		o.Close()
		t.Fatalf("needs both tracepoints and sock_diag: %q", o.Warnings())
	}
	threadsAt := func(n int) (at, all int) {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil {
				continue // ended meanwhile
			}
			all++
			if 20-p == n {
				at++
			}
		}
		return at, all
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	if err := o.Sync(ctx); err != nil { // both sources are running
		t.Fatal(err)
	}
	at, all := threadsAt(nice)
	t.Logf("running: %d of %d threads at nice %d", at, all, nice)
	if at != 2 || all <= 2 {
		t.Errorf("%d of %d threads at nice %d while the observer runs, want its 2", at, all, nice)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		at, all := threadsAt(nice)
		if at == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d threads still at nice %d after Run returned", at, all, nice)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
