package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/apps"
	"github.com/finproxy/finproxy/internal/nstest"
)

func requireLab(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "ip")
	nstest.RequireTool(t, "ethtool")
}

var (
	fpappOnce sync.Once
	fpappPath string
	fpappErr  error
	fpappDir  string
)

func TestMain(m *testing.M) {
	if prefix := os.Getenv(crashEnv); prefix != "" {
		crashHelper(prefix)
	}
	code := m.Run()
	if fpappDir != "" {
		os.RemoveAll(fpappDir)
	}
	os.Exit(code)
}

// fpapp builds internal/apps/cmd/fpapp once per test binary and returns its path.
func fpapp(t *testing.T) string {
	t.Helper()
	nstest.RequireTool(t, "go")
	fpappOnce.Do(func() {
		fpappDir, fpappErr = os.MkdirTemp("", "fpapp")
		if fpappErr != nil {
			return
		}
		fpappPath = filepath.Join(fpappDir, "fpapp")
		out, err := exec.Command("go", "build", "-o", fpappPath, "github.com/finproxy/finproxy/internal/apps/cmd/fpapp").CombinedOutput()
		if err != nil {
			fpappErr = fmt.Errorf("go build fpapp: %v: %s", err, out)
		}
	})
	if fpappErr != nil {
		t.Fatal(fpappErr)
	}
	return fpappPath
}

// ours lists the namespaces and lock files of prefix.
func ours(t *testing.T, prefix string) []string {
	t.Helper()
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix+"-") {
			got = append(got, n)
		}
	}
	locks, _ := filepath.Glob(filepath.Join(lockDir, prefix+"-*"))
	return append(got, locks...)
}

// rootLabLinks lists links of the root namespace that carry the lab's link names.
func rootLabLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, n := range []string{ClientLink, RouterClientLink, RouterServerLink, ServerLink} {
			if strings.Contains(l, " "+n+"@") || strings.Contains(l, " "+n+":") {
				got = append(got, l)
			}
		}
	}
	return got
}

func assertNothingLeft(t *testing.T, prefix string) {
	t.Helper()
	if left := ours(t, prefix); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
	if links := rootLabLinks(t); len(links) > 0 {
		t.Errorf("lab links in the root namespace: %q", links)
	}
}

// run returns what cmd printed on stdout. Its stderr is only logged: `ip` warns there
// ("Peer netns reference is invalid.") while another test's namespace is being deleted,
// which is not part of the listing.
func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s%s", cmd, err, out, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("%s: stderr: %s", cmd, stderr.String())
	}
	return string(out)
}

func TestTopology(t *testing.T) {
	requireLab(t)
	app := fpapp(t)
	const prefix = "fplabt"
	ctx := context.Background()
	topo, err := New(ctx, Options{
		Prefix: prefix,
		Sysctls: map[string]map[string]string{
			"client": {"net.ipv4.tcp_max_tw_buckets": "0"},
			"server": {"net/ipv4/tcp_fin_timeout": "7"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	drops := linkDrops(t, topo)

	listed := run(t, exec.Command("ip", "netns", "list"))
	for _, ns := range []string{topo.Client, topo.Router, topo.Server} {
		if !strings.Contains(listed, ns) {
			t.Errorf("ip netns list lacks %s:\n%s", ns, listed)
		}
		if !strings.HasPrefix(ns, prefix+"-"+topo.ID+"-") {
			t.Errorf("namespace name %s", ns)
		}
	}

	t.Run("sysctls", func(t *testing.T) {
		get := func(role, key string) string {
			return strings.TrimSpace(run(t, topo.Command(ctx, role, "sysctl", "-n", key)))
		}
		if v := get(RoleClient, "net.ipv4.tcp_max_tw_buckets"); v != "0" {
			t.Errorf("client tcp_max_tw_buckets = %s, want 0", v)
		}
		for _, r := range []string{RoleRouter, RoleServer} {
			if v := get(r, "net.ipv4.tcp_max_tw_buckets"); v == "0" {
				t.Errorf("%s tcp_max_tw_buckets = 0: the client's sysctl leaked", r)
			}
		}
		if v := get(RoleServer, "net.ipv4.tcp_fin_timeout"); v != "7" {
			t.Errorf("server tcp_fin_timeout = %s, want 7", v)
		}
		if v := get(RoleClient, "net.ipv4.tcp_fin_timeout"); v == "7" {
			t.Errorf("client tcp_fin_timeout = 7: the server's sysctl leaked")
		}
		if v := get(RoleRouter, "net.ipv4.ip_forward"); v != "1" {
			t.Errorf("router ip_forward = %s", v)
		}
		if v := get(RoleRouter, "net.ipv6.conf.all.forwarding"); v != "1" {
			t.Errorf("router ipv6 forwarding = %s", v)
		}
		// The host is untouched.
		if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_max_tw_buckets"); err == nil && strings.TrimSpace(string(b)) == "0" {
			t.Errorf("host tcp_max_tw_buckets = 0")
		}
	})

	t.Run("offloads", func(t *testing.T) {
		for _, l := range []struct{ role, link string }{
			{RoleClient, ClientLink}, {RoleRouter, RouterClientLink}, {RoleRouter, RouterServerLink}, {RoleServer, ServerLink},
		} {
			out := run(t, topo.Command(ctx, l.role, "ethtool", "-k", l.link))
			for _, f := range []string{"tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload", "tx-checksumming"} {
				if !strings.Contains(out, "\n"+f+": off") {
					t.Errorf("%s/%s: want %s: off in\n%s", l.role, l.link, f, out)
				}
			}
		}
	})

	t.Run("routes", func(t *testing.T) {
		for _, r := range []struct {
			role string
			gw4  netip.Addr
			gw6  netip.Addr
		}{{RoleClient, topo.RouterClientAddr, topo.RouterClientAddr6}, {RoleServer, topo.RouterServerAddr, topo.RouterServerAddr6}} {
			v4 := run(t, topo.Command(ctx, r.role, "ip", "-4", "route", "show", "default"))
			v6 := run(t, topo.Command(ctx, r.role, "ip", "-6", "route", "show", "default"))
			if !strings.Contains(v4, "via "+r.gw4.String()) || strings.Count(strings.TrimSpace(v4), "\n") != 0 {
				t.Errorf("%s IPv4 default route: %q, want one via %s", r.role, v4, r.gw4)
			}
			if !strings.Contains(v6, "via "+r.gw6.String()) || strings.Count(strings.TrimSpace(v6), "\n") != 0 {
				t.Errorf("%s IPv6 default route: %q, want one via %s", r.role, v6, r.gw6)
			}
		}
		if out := run(t, topo.Command(ctx, RoleRouter, "ip", "route", "show", "default")); strings.TrimSpace(out) != "" {
			t.Errorf("router has a default route: %q", out)
		}
		// Each namespace has only loopback and its lab links.
		for role, want := range map[string][]string{
			RoleClient: {"lo", ClientLink}, RoleRouter: {"lo", RouterClientLink, RouterServerLink}, RoleServer: {"lo", ServerLink},
		} {
			out := run(t, topo.Command(ctx, role, "ip", "-o", "link", "show"))
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				got = append(got, name)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s links %q, want %q", role, got, want)
			}
		}
	})

	for _, tc := range []struct {
		name     string
		srv, cli netip.Addr
	}{{"ipv4", topo.ServerAddr, topo.ClientAddr}, {"ipv6", topo.ServerAddr6, topo.ClientAddr6}} {
		t.Run("tcp-"+tc.name, func(t *testing.T) {
			addr := netip.AddrPortFrom(tc.srv, 8080).String()
			srv := topo.Command(ctx, RoleServer, app, "server", "--listen", addr, "--mode", "reply-wait-close", "--count", "2")
			stdout, err := srv.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var srvErr strings.Builder
			srv.Stderr = &srvErr
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				srv.Process.Kill()
				srv.Wait()
			}()
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || sc.Text() != "ready" {
				t.Fatalf("server: no ready line (%q); stderr: %s", sc.Text(), srvErr.String())
			}
			out := run(t, topo.Command(ctx, RoleClient, app, "client", "--connect", addr, "--mode", "request-close", "--count", "2", "--timeout", "5s"))
			for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
				var r apps.Record
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("client line %q: %v", l, err)
				}
				local, err := netip.ParseAddrPort(r.Local)
				if err != nil || local.Addr() != tc.cli || r.Remote != addr || r.Error != "" || r.Conn != i {
					t.Errorf("client record %+v: want local %s, remote %s, no error", r, tc.cli, addr)
				}
			}
			for i := range 2 {
				if !sc.Scan() {
					t.Fatalf("server record %d missing; stderr: %s", i, srvErr.String())
				}
				var r apps.Record
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Error != "" {
					t.Errorf("server record %q: %v", sc.Text(), err)
				}
			}
			if err := srv.Wait(); err != nil {
				t.Errorf("server: %v; stderr: %s", err, srvErr.String())
			}
		})
	}

	t.Run("no-loss", func(t *testing.T) {
		// Nothing the connections above sent was lost.
		assertNoLoss(t, topo, drops)
	})

	t.Run("do", func(t *testing.T) {
		var got []byte
		if err := topo.Do(RoleServer, func() error {
			var err error
			got, err = os.ReadFile("/proc/sys/net/ipv4/tcp_fin_timeout")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != "7" {
			t.Errorf("Do(server) read tcp_fin_timeout %q, want 7", got)
		}
	})

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	assertNothingLeft(t, prefix)
	if err := topo.Command(ctx, RoleClient, "true").Run(); err == nil {
		t.Errorf("command in a closed topology's namespace ran")
	}
}

// linkDrops returns every lab link's dropped counter (received + sent), by role and name.
func linkDrops(t *testing.T, topo *Topology) map[string]uint64 {
	t.Helper()
	drops := map[string]uint64{}
	for _, role := range []string{RoleClient, RoleRouter, RoleServer} {
		out, err := topo.Command(context.Background(), role, "ip", "-s", "-j", "link", "show").Output()
		if err != nil {
			t.Fatalf("ip -s link in %s: %v", role, err)
		}
		var links []struct {
			Name  string `json:"ifname"`
			Stats struct {
				RX struct{ Dropped uint64 } `json:"rx"`
				TX struct{ Dropped uint64 } `json:"tx"`
			} `json:"stats64"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			t.Fatalf("ip -s -j link in %s: %v", role, err)
		}
		for _, l := range links {
			drops[role+" "+l.Name] = l.Stats.RX.Dropped + l.Stats.TX.Dropped
		}
	}
	return drops
}

// assertNoLoss fails t if a lab link dropped a packet since before (linkDrops right after
// New: a veth whose peer is not up yet drops what it sends, and while several topologies
// are built at once an IPv6 control packet of the setup can meet that). TCP
// retransmissions are only logged: on a loaded machine (CI runs packages in parallel) a
// SYN can wait past its 1 s timer without being lost, and a retransmission then says
// nothing about the lab.
func assertNoLoss(t *testing.T, topo *Topology, before map[string]uint64) {
	t.Helper()
	for link, n := range before {
		if n != 0 {
			t.Logf("%s %s: %d dropped during the setup", topo.ID, link, n)
		}
	}
	for link, n := range linkDrops(t, topo) {
		if d := n - before[link]; d != 0 {
			t.Errorf("%s %s: %d dropped", topo.ID, link, d)
		}
	}
	for _, r := range []string{RoleClient, RoleServer} {
		if n := tcpRetransSegs(t, topo, r); n != 0 {
			t.Logf("%s %s: %d TCP segments retransmitted (no link dropped one: a delay, not a loss)", topo.ID, r, n)
		}
	}
}

// tcpRetransSegs reads Tcp RetransSegs from /proc/net/snmp of the role's namespace.
func tcpRetransSegs(t *testing.T, topo *Topology, role string) int64 {
	t.Helper()
	c, err := topo.TCPCounters(role)
	if err != nil {
		t.Fatal(err)
	}
	return c["TcpRetransSegs"]
}

func TestCommandUnknownRole(t *testing.T) {
	var topo Topology
	if err := topo.Command(context.Background(), "nope", "true").Run(); err == nil || !strings.Contains(err.Error(), "unknown role") {
		t.Errorf("Command with an unknown role: %v", err)
	}
}

func TestValidation(t *testing.T) {
	for _, p := range []string{"FP", "fp-x", "a/b", strings.Repeat("a", 17)} {
		if _, err := checkPrefix(p); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
	if p, err := checkPrefix(""); err != nil || p != DefaultPrefix {
		t.Errorf("empty prefix: %q, %v", p, err)
	}
	for key, want := range map[string]string{
		"net.ipv4.tcp_fin_timeout":          "/proc/sys/net/ipv4/tcp_fin_timeout",
		"net/ipv4/conf/to-router/rp_filter": "/proc/sys/net/ipv4/conf/to-router/rp_filter",
		"kernel.panic":                      "",
		"net.ipv4..x":                       "",
		"net/../kernel/panic":               "",
		"vm.swappiness":                     "",
		"net":                               "",
	} {
		got, err := sysctlPath(key)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, m := range []map[string]map[string]string{
		{"host": {"net.ipv4.ip_forward": "1"}},
		{"client": {"kernel.panic": "1"}},
	} {
		if _, err := New(context.Background(), Options{Prefix: "fplabv", Sysctls: m}); err == nil {
			t.Errorf("New accepted sysctls %v", m)
		}
	}
}

// TestNewFailsClean checks that a New that fails part way (a sysctl the kernel rejects)
// removes everything it made.
func TestNewFailsClean(t *testing.T) {
	requireLab(t)
	const prefix = "fplabf"
	for _, kv := range []map[string]string{
		{"net.ipv4.tcp_fin_timeout": "not-a-number"},
		{"net.ipv4.no_such_key": "1"},
	} {
		_, err := New(context.Background(), Options{Prefix: prefix, Sysctls: map[string]map[string]string{"server": kv}})
		if err == nil {
			t.Fatalf("New with sysctls %v succeeded", kv)
		}
		t.Logf("New with %v: %v", kv, err)
		assertNothingLeft(t, prefix)
	}
}

// TestNewCancelled cancels ctx at each step of New in turn: New must fail with the
// cancellation and leave nothing behind.
func TestNewCancelled(t *testing.T) {
	requireLab(t)
	const prefix = "fplabx"
	var steps []string
	stepHook = func(s string) { steps = append(steps, s) }
	topo, err := New(context.Background(), Options{Prefix: prefix})
	stepHook = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 5 {
		t.Fatalf("steps %q", steps)
	}
	t.Cleanup(func() { stepHook = nil })
	for _, at := range steps {
		ctx, cancel := context.WithCancel(context.Background())
		stepHook = func(s string) {
			if s == at {
				cancel()
			}
		}
		topo, err := New(ctx, Options{Prefix: prefix})
		cancel()
		if err == nil {
			topo.Close()
			t.Errorf("cancelled at %s: New succeeded", at)
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled at %s: %v, want context.Canceled", at, err)
		}
		assertNothingLeft(t, prefix)
	}
	stepHook = nil

	// A deadline that expires while New runs.
	for _, d := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		topo, err := New(ctx, Options{Prefix: prefix})
		cancel()
		if err == nil {
			topo.Close()
		}
		assertNothingLeft(t, prefix)
	}
}

const crashEnv = "FINPROXY_LAB_CRASH_HELPER"

// crashHelper runs in the child process of TestCleanupCrashedRun (the test binary run
// again with crashEnv set): it makes a topology, reports its id and waits to be killed.
func crashHelper(prefix string) {
	topo, err := New(context.Background(), Options{Prefix: prefix})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("id", topo.ID)
	select {}
}

func TestCleanupCrashedRun(t *testing.T) {
	requireLab(t)
	const prefix = "fplabc"
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), crashEnv+"="+prefix)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	t.Cleanup(func() {
		child.Process.Kill()
		child.Wait()
		// What the helper made, by name, if the Cleanup under test did not remove it.
		if id != "" {
			for _, role := range roles {
				_, _ = deleteNS(nsName(prefix, id, role))
			}
			_ = os.Remove(lockPath(prefix, id))
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id "); ok {
			id = v
			break
		}
		if strings.HasPrefix(sc.Text(), "error") {
			t.Fatalf("helper: %s", sc.Text())
		}
	}
	if id == "" {
		t.Fatal("helper reported no topology id")
	}
	go io.Copy(io.Discard, stdout)

	// A live topology with the same prefix, which Cleanup must leave alone.
	live, err := New(context.Background(), Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	// While the helper lives, its run is not cleaned up either.
	if removed, err := Cleanup(prefix); err != nil || len(removed) != 0 {
		t.Fatalf("Cleanup with both runs alive: removed %q, %v", removed, err)
	}

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	want := []string{nsName(prefix, id, RoleClient), nsName(prefix, id, RoleRouter), nsName(prefix, id, RoleServer)}
	for _, n := range want {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err != nil {
			t.Fatalf("crashed run's namespace %s: %v", n, err)
		}
	}
	removed, err := Cleanup(prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("Cleanup removed %q, want %q", removed, want)
	}
	for _, n := range append(want, lockPath(prefix, id)) {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err == nil {
			t.Errorf("%s still there", n)
		}
	}
	if _, err := os.Stat(lockPath(prefix, id)); err == nil {
		t.Errorf("lock file of the crashed run still there")
	}
	// The live topology still works.
	for _, ns := range []string{live.Client, live.Router, live.Server} {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			t.Errorf("live namespace %s: %v", ns, err)
		}
	}
	if err := live.checkConnectivity(context.Background()); err != nil {
		t.Errorf("live topology after Cleanup: %v", err)
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, prefix)
}

// TestParallel builds several topologies at once, as parallel e2e tests do.
func TestParallel(t *testing.T) {
	requireLab(t)
	const prefix = "fplabp"
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	topos := make(chan *Topology, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topo, err := New(context.Background(), Options{Prefix: prefix})
			if err != nil {
				errs <- err
				return
			}
			topos <- topo
		}()
	}
	wg.Wait()
	close(errs)
	close(topos)
	for err := range errs {
		t.Error(err)
	}
	ids := map[string]bool{}
	for topo := range topos {
		ids[topo.ID] = true
		drops := linkDrops(t, topo)
		if err := topo.checkConnectivity(context.Background()); err != nil {
			t.Error(err)
		}
		assertNoLoss(t, topo, drops)
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	}
	if len(ids) != 6 {
		t.Errorf("%d distinct topologies, want 6", len(ids))
	}
	assertNothingLeft(t, prefix)
}
