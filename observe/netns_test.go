package observe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	fplab "github.com/finproxy/finproxy/lab"
)

func TestNamespacesOption(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want []string
	}{
		{Options{}, []string{""}},
		{Options{NetNS: "a"}, []string{"a"}},
		{Options{NetNSs: []string{"a", "b", "a", ""}}, []string{"a", "b", ""}},
	} {
		if got := namespaces(tc.opts); !slices.Equal(got, tc.want) {
			t.Errorf("namespaces(%+v) = %q, want %q", tc.opts, got, tc.want)
		}
	}
	if _, err := New(Options{NetNS: "a", NetNSs: []string{"b"}, NoTrace: true}); err == nil {
		t.Error("New with NetNS and NetNSs: no error")
	}
}

// A namespace that cannot be opened is a warning when another can be polled, an error
// when none can.
func TestNamespacesMissing(t *testing.T) {
	o, err := New(Options{NetNSs: []string{"", "/nonexistent/ns"}, NoTrace: true})
	if err != nil {
		nstest.Skip(t, "sock_diag unavailable: "+err.Error())
	}
	defer o.Close()
	if w := o.Warnings(); len(w) != 1 {
		t.Errorf("warnings %q, want one about /nonexistent/ns", w)
	}
	if r := o.Snapshot(); !r.Sources.Diag || r.Sources.NetNS != "" || r.Sources.NetNSs != nil {
		t.Errorf("sources %+v, want sock_diag in the current namespace only", r.Sources)
	}
	if _, err := New(Options{NetNSs: []string{"/nonexistent/a", "/nonexistent/b"}, NoTrace: true}); err == nil {
		t.Error("New with no namespace that opens: no error")
	}
}

// A client and a server in two namespaces joined through a router: one Observer polling
// both namespaces sees the client's timewait socket (only in the client's namespace) and
// the server's socket and owner (only in the server's).
func TestPrivilegedTwoNamespaces(t *testing.T) {
	nstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := fplab.New(ctx, fplab.Options{Prefix: "fpobs"})
	if err != nil {
		nstest.Skip(t, "lab: "+err.Error())
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	const port = 41070
	o, err := New(Options{Filter: Filter{Ports: []uint16{port}}, NetNSs: []string{topo.Client, topo.Server},
		PollInterval: 20 * time.Millisecond})
	if err != nil {
		nstest.Skip(t, "no observation source: "+err.Error())
	}
	if o.trace == nil || len(o.diags) != 2 {
		o.Close()
		nstest.Skip(t, "needs the tracepoints and sock_diag in both namespaces: "+dump(o.Warnings()))
	}
	inst := o.Instance()
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(rctx) }()
	t.Cleanup(func() {
		rcancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(inst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("tracefs instance %s left behind", inst)
		}
	})
	l := &lab{t: t, o: o, port: port}

	srvAddr := net.JoinHostPort(topo.ServerAddr.String(), strconv.Itoa(port))
	var ln net.Listener
	if err := topo.Do(fplab.RoleServer, func() (err error) { ln, err = net.Listen("tcp4", srvAddr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := topo.Do(fplab.RoleClient, func() (err error) { c, err = net.Dial("tcp4", srvAddr); return err }); err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ca, sa := addrOf(c.LocalAddr()), addrOf(s.LocalAddr())

	// The client closes (an orphan: timewait FIN_WAIT2 once its FIN is acknowledged); the
	// server closes 200 ms after reading EOF.
	c.Close()
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("server read: %d, %v; want EOF", n, err)
	}
	l.waitFor("server socket and owner", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && cn.Server.Socket != nil && cn.Server.Socket.State == CloseWait && cn.Server.Owner != nil
	})
	time.Sleep(200 * time.Millisecond)
	s.Close()
	r := l.waitFor("client TIME_WAIT", func(r Report) bool {
		cn := findConn(r, ca, sa)
		return cn != nil && lastState(cn.Client) == TimeWait && lastState(cn.Server) == Close
	})
	cn := findConn(r, ca, sa)
	if got, want := states(cn.Client), []State{SynSent, Established, FinWait1, FinWait2, TimeWait}; !slices.Equal(got, want) {
		t.Errorf("client states %v, want %v\n%s", got, want, dump(cn))
	}
	if fw2 := entry(cn.Client, FinWait2); fw2 == nil || time.Duration(fw2.Dwell) < 150*time.Millisecond {
		t.Errorf("client FIN_WAIT2 %+v, want about 200 ms", fw2)
	}
	if tw := cn.Client.Timewait; tw == nil || tw.State != TimeWait || time.Duration(tw.Remaining) < 50*time.Second {
		t.Errorf("client timewait %+v, want TIME_WAIT with about 60 s left", tw)
	}
	if got, want := states(cn.Server), []State{SynRecv, Established, CloseWait, LastAck, Close}; !slices.Equal(got, want) {
		t.Errorf("server states %v, want %v\n%s", got, want, dump(cn))
	}
	if cn.Server.Owner == nil || cn.Server.Owner.Pid != os.Getpid() {
		t.Errorf("server owner %+v, want this process (%d)", cn.Server.Owner, os.Getpid())
	}
	if !slices.Equal(r.Sources.NetNSs, []string{topo.Client, topo.Server}) || r.Sources.NetNS != "" {
		t.Errorf("sources %+v, want both namespaces", r.Sources)
	}
	if !cn.Client.Addr.Addr().Is4() || cn.Client.Addr.Addr() != topo.ClientAddr || cn.Server.Addr != netip.AddrPortFrom(topo.ServerAddr, port) {
		t.Errorf("connection %v -> %v", cn.Client.Addr, cn.Server.Addr)
	}
	t.Logf("%s", dump(cn))
}

// The polled namespace's own addresses are known from the start, before any poll saw a
// socket there.
func TestNamespaceAddrs(t *testing.T) {
	ns := nstest.New(t)
	ns.MustRun(t, "ip", "addr", "add", "198.18.77.1/24", "dev", "lo")
	addrs, err := namespaceAddrs(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]bool{netip.MustParseAddr("127.0.0.1"): false, netip.MustParseAddr("198.18.77.1"): false}
	for _, a := range addrs {
		if _, ok := want[a]; ok {
			want[a] = true
		}
	}
	for a, seen := range want {
		if !seen {
			t.Errorf("%s missing from %v", a, addrs)
		}
	}
	if nsPath("x") != "/run/netns/x" || nsPath("/proc/1/ns/net") != "/proc/1/ns/net" {
		t.Error("nsPath")
	}
}
