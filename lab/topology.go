package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Roles name the three namespaces of a topology.
const (
	RoleClient = "client"
	RoleRouter = "router"
	RoleServer = "server"
)

var roles = []string{RoleClient, RoleRouter, RoleServer}

// Interface names inside the namespaces. They exist only inside the lab namespaces (the
// veths are created there directly, never in the root namespace), so they need not be
// unique on the host.
const (
	ClientLink       = "to-router" // in the client namespace
	RouterClientLink = "to-client" // in the router namespace, peer of the client's link
	RouterServerLink = "to-server" // in the router namespace, peer of the server's link
	ServerLink       = "to-router" // in the server namespace
)

// Addresses of every topology: IPv4 from the benchmarking range 198.18.0.0/15 (RFC 2544)
// and IPv6 from the unique-local fd00:f1::/32, /24 and /64 links. Every topology uses the
// same ones; they never clash, each topology living in namespaces of its own.
var (
	clientPrefix  = netip.MustParsePrefix("198.18.1.2/24")
	routerCPrefix = netip.MustParsePrefix("198.18.1.1/24")
	routerSPrefix = netip.MustParsePrefix("198.18.2.1/24")
	serverPrefix  = netip.MustParsePrefix("198.18.2.2/24")

	clientPrefix6  = netip.MustParsePrefix("fd00:f1:1::2/64")
	routerCPrefix6 = netip.MustParsePrefix("fd00:f1:1::1/64")
	routerSPrefix6 = netip.MustParsePrefix("fd00:f1:2::1/64")
	serverPrefix6  = netip.MustParsePrefix("fd00:f1:2::2/64")
)

// Topology is a client and a server network namespace joined through a router namespace:
//
//	client [to-router] 198.18.1.2/24  <-veth->  198.18.1.1/24 [to-client] router
//	router [to-server] 198.18.2.1/24  <-veth->  198.18.2.2/24 [to-router] server
//	(IPv6: fd00:f1:1::2, ::1 and fd00:f1:2::1, ::2, all /64)
//
// The client and the server route everything through the router; the router forwards
// (IPv4 and IPv6) between its two links. No namespace has a route to anything else.
type Topology struct {
	// ID is the run's random id, part of every namespace name.
	ID string
	// Client, Router and Server are the namespace names, as `ip netns` lists them:
	// <prefix>-<id>-client and so on.
	Client, Router, Server string

	ClientAddr, ServerAddr   netip.Addr // IPv4
	ClientAddr6, ServerAddr6 netip.Addr // IPv6
	// The router's addresses on the client's link and on the server's link, which are
	// the client's and the server's gateways.
	RouterClientAddr, RouterServerAddr   netip.Addr
	RouterClientAddr6, RouterServerAddr6 netip.Addr
	// ClientPrefix and ServerPrefix are the client's and the server's links (IPv4, IPv6).
	ClientPrefix, ServerPrefix   netip.Prefix
	ClientPrefix6, ServerPrefix6 netip.Prefix

	log     *slog.Logger
	mu      sync.RWMutex // Do holds it for reading, Close for writing
	closed  bool
	lock    *runLock
	handles map[string]netns.NsHandle // role -> open namespace
	created []string                  // namespace names made so far, for removal
}

// Options configure New.
type Options struct {
	// Prefix starts every namespace name; default DefaultPrefix ("fp"). 1 to 16 lower-case
	// letters or digits. Cleanup takes the same prefix.
	Prefix string
	// Sysctls per role ("client", "router", "server"): key -> value, e.g.
	// {"client": {"net.ipv4.tcp_max_tw_buckets": "0"}}. Only net.* keys (the per-namespace
	// ones) are accepted. They are written after the links exist and before the
	// connectivity check, in key order, and read back; per-link keys can name the links
	// (net.ipv4.conf.to-router.rp_filter). The lab's own settings (router forwarding,
	// accept_dad=0) come first, so these may override them.
	Sysctls map[string]map[string]string
	// Logger receives debug records of each step; nil discards them.
	Logger *slog.Logger
}

// stepHook, when set (by tests), is called before each step of New with its name.
var stepHook func(step string)

// New builds a topology. It fails, having removed everything it made, if any step fails,
// if ctx ends first, or if a TCP connection from the client to the server (IPv4 and IPv6)
// cannot be made at the end.
func New(ctx context.Context, opts Options) (_ *Topology, err error) {
	prefix, err := checkPrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	userSysctls, err := checkSysctls(opts.Sysctls)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b[:])
	t := &Topology{
		ID:                id,
		Client:            nsName(prefix, id, RoleClient),
		Router:            nsName(prefix, id, RoleRouter),
		Server:            nsName(prefix, id, RoleServer),
		ClientAddr:        clientPrefix.Addr(),
		ServerAddr:        serverPrefix.Addr(),
		ClientAddr6:       clientPrefix6.Addr(),
		ServerAddr6:       serverPrefix6.Addr(),
		RouterClientAddr:  routerCPrefix.Addr(),
		RouterServerAddr:  routerSPrefix.Addr(),
		RouterClientAddr6: routerCPrefix6.Addr(),
		RouterServerAddr6: routerSPrefix6.Addr(),
		ClientPrefix:      clientPrefix.Masked(),
		ServerPrefix:      serverPrefix.Masked(),
		ClientPrefix6:     clientPrefix6.Masked(),
		ServerPrefix6:     serverPrefix6.Masked(),
		log:               log.With("lab", prefix+"-"+id),
		handles:           map[string]netns.NsHandle{},
	}
	defer func() {
		if err != nil {
			if cerr := t.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("lab: undo: %w", cerr))
			}
		}
	}()
	step := func(name string) error {
		if stepHook != nil {
			stepHook(name)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lab: %s: %w", name, context.Cause(ctx))
		}
		t.log.Debug("lab step", "step", name)
		return nil
	}

	if err := step("lock"); err != nil {
		return nil, err
	}
	if t.lock, err = acquireLock(prefix, id); err != nil {
		return nil, err
	}
	for _, r := range roles {
		if err := step("netns-" + r); err != nil {
			return nil, err
		}
		if err := t.addNS(r); err != nil {
			return nil, err
		}
	}
	if err := step("links"); err != nil {
		return nil, err
	}
	if err := t.addLinks(); err != nil {
		return nil, err
	}
	if err := step("offloads"); err != nil {
		return nil, err
	}
	for r, links := range map[string][]string{
		RoleClient: {ClientLink},
		RoleRouter: {RouterClientLink, RouterServerLink},
		RoleServer: {ServerLink},
	} {
		if err := disableOffloads(t.handles[r], links...); err != nil {
			return nil, fmt.Errorf("lab: %s: %w", r, err)
		}
	}
	if err := step("forwarding"); err != nil {
		return nil, err
	}
	if err := writeSysctls(t.handles[RoleRouter], [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
	}); err != nil {
		return nil, fmt.Errorf("lab: router: %w", err)
	}
	if err := step("addresses"); err != nil {
		return nil, err
	}
	if err := t.addAddresses(); err != nil {
		return nil, err
	}
	if err := step("routes"); err != nil {
		return nil, err
	}
	if err := t.addRoutes(); err != nil {
		return nil, err
	}
	if err := step("sysctls"); err != nil {
		return nil, err
	}
	for _, r := range roles {
		if err := writeSysctls(t.handles[r], userSysctls[r]); err != nil {
			return nil, fmt.Errorf("lab: %s: %w", r, err)
		}
	}
	if err := step("link-state"); err != nil {
		return nil, err
	}
	if err := t.waitOperUp(ctx); err != nil {
		return nil, err
	}
	if err := step("check"); err != nil {
		return nil, err
	}
	if err := t.checkConnectivity(ctx); err != nil {
		return nil, err
	}
	t.log.Debug("lab ready", "client", t.Client, "router", t.Router, "server", t.Server)
	return t, nil
}

// checkSysctls validates Options.Sysctls and orders each role's keys.
func checkSysctls(m map[string]map[string]string) (map[string][][2]string, error) {
	out := map[string][][2]string{}
	for role, kv := range m {
		if !validRole(role) {
			return nil, fmt.Errorf("lab: sysctls: unknown role %q (want client, router or server)", role)
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			if _, err := sysctlPath(k); err != nil {
				return nil, fmt.Errorf("lab: %s: %w", role, err)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out[role] = append(out[role], [2]string{k, kv[k]})
		}
	}
	return out, nil
}

func validRole(role string) bool {
	return role == RoleClient || role == RoleRouter || role == RoleServer
}

// addNS creates the role's namespace, with loopback up and duplicate address detection
// off (so IPv6 addresses, link-local ones included, are usable at once).
func (t *Topology) addNS(role string) error {
	name := t.NetNS(role)
	h, err := createNS(name)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	t.created = append(t.created, name)
	t.handles[role] = h
	if err := writeSysctls(h, [][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
	}); err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	return t.withLinks(role, func(nh *netlink.Handle) error {
		lo, err := nh.LinkByName("lo")
		if err != nil {
			return err
		}
		return nh.LinkSetUp(lo)
	})
}

// withLinks runs f with a netlink handle that works inside the role's namespace.
func (t *Topology) withLinks(role string, f func(*netlink.Handle) error) error {
	nh, err := netlink.NewHandleAt(t.handles[role])
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", t.NetNS(role), err)
	}
	defer nh.Close()
	if err := f(nh); err != nil {
		return fmt.Errorf("lab: %s: %w", t.NetNS(role), err)
	}
	return nil
}

// addLinks creates the two veth pairs directly inside the namespaces: each is made from
// the client's (server's) namespace with its peer placed in the router's.
func (t *Topology) addLinks() error {
	router := t.handles[RoleRouter]
	for _, p := range []struct{ role, name, peer string }{
		{RoleClient, ClientLink, RouterClientLink},
		{RoleServer, ServerLink, RouterServerLink},
	} {
		err := t.withLinks(p.role, func(nh *netlink.Handle) error {
			la := netlink.NewLinkAttrs()
			la.Name = p.name
			veth := &netlink.Veth{LinkAttrs: la, PeerName: p.peer, PeerNamespace: netlink.NsFd(router), PeerTxQLen: -1}
			if err := nh.LinkAdd(veth); err != nil {
				return fmt.Errorf("add veth %s <-> %s/%s: %w", p.name, t.Router, p.peer, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// addAddresses assigns the addresses (IPv6 with nodad) and brings the links up.
func (t *Topology) addAddresses() error {
	for _, a := range []struct {
		role, link string
		addrs      []netip.Prefix
	}{
		{RoleClient, ClientLink, []netip.Prefix{clientPrefix, clientPrefix6}},
		{RoleRouter, RouterClientLink, []netip.Prefix{routerCPrefix, routerCPrefix6}},
		{RoleRouter, RouterServerLink, []netip.Prefix{routerSPrefix, routerSPrefix6}},
		{RoleServer, ServerLink, []netip.Prefix{serverPrefix, serverPrefix6}},
	} {
		err := t.withLinks(a.role, func(nh *netlink.Handle) error {
			l, err := nh.LinkByName(a.link)
			if err != nil {
				return err
			}
			for _, p := range a.addrs {
				addr := &netlink.Addr{IPNet: ipNet(p)}
				if p.Addr().Is6() {
					addr.Flags = unix.IFA_F_NODAD
				}
				if err := nh.AddrAdd(l, addr); err != nil {
					return fmt.Errorf("add %s to %s: %w", p, a.link, err)
				}
			}
			if err := nh.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", a.link, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// addRoutes gives the client and the server a default route (IPv4 and IPv6) through the
// router, inside their namespaces. The router needs none: it is on both links.
func (t *Topology) addRoutes() error {
	for _, r := range []struct {
		role, link string
		gws        []netip.Addr
	}{
		{RoleClient, ClientLink, []netip.Addr{routerCPrefix.Addr(), routerCPrefix6.Addr()}},
		{RoleServer, ServerLink, []netip.Addr{routerSPrefix.Addr(), routerSPrefix6.Addr()}},
	} {
		err := t.withLinks(r.role, func(nh *netlink.Handle) error {
			l, err := nh.LinkByName(r.link)
			if err != nil {
				return err
			}
			for _, gw := range r.gws {
				dst := ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
				if gw.Is6() {
					dst = ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
				}
				route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.IP(gw.AsSlice())}
				if err := nh.RouteAdd(route); err != nil {
					return fmt.Errorf("add default route via %s: %w", gw, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// waitOperUp waits until the kernel reports every lab link operationally up. The end of a
// veth pair that was set up first gets its carrier when its peer comes up, and its transmit
// queue is attached later, by the kernel's link watcher, which sets the operational state
// just before; what is sent before that is dropped. (Without this wait the connectivity
// check's first ARP request was sometimes lost, costing a 1 s retransmission.)
func (t *Topology) waitOperUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	for _, l := range []struct{ role, link string }{
		{RoleClient, ClientLink}, {RoleRouter, RouterClientLink}, {RoleRouter, RouterServerLink}, {RoleServer, ServerLink},
	} {
		err := t.withLinks(l.role, func(nh *netlink.Handle) error {
			for {
				link, err := nh.LinkByName(l.link)
				if err != nil {
					return err
				}
				if st := link.Attrs().OperState; st == netlink.OperUp {
					return nil
				} else if ctx.Err() != nil {
					return fmt.Errorf("link %s: operational state %s, not up: %w", l.link, st, context.Cause(ctx))
				}
				time.Sleep(time.Millisecond)
			}
		})
		if err != nil {
			return err
		}
	}
	t.log.Debug("lab links up", "waited", time.Since(start))
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// NetNS returns the name of the role's namespace ("client", "router" or "server"), or ""
// for an unknown role.
func (t *Topology) NetNS(role string) string {
	switch role {
	case RoleClient:
		return t.Client
	case RoleRouter:
		return t.Router
	case RoleServer:
		return t.Server
	}
	return ""
}

// Command returns a command that runs the program name inside the role's namespace,
// through `ip netns exec` (which execs the program: killing the command's process kills
// the program). ctx kills it as exec.CommandContext does. For an unknown role the
// command fails to start.
func (t *Topology) Command(ctx context.Context, role string, name string, args ...string) *exec.Cmd {
	ns := t.NetNS(role)
	if ns == "" {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Err = fmt.Errorf("lab: unknown role %q (want client, router or server)", role)
		return cmd
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Do runs f on an OS thread inside the role's namespace. Sockets f creates belong to that
// namespace for their whole life and may be used from any goroutine afterwards; processes
// f starts inherit the namespace. Files under /proc/sys/net opened by f are the
// namespace's; for /proc/net use /proc/thread-self/net (/proc/self/net is the main
// thread's). Close waits for running Do calls, so f must not call Close.
func (t *Topology) Do(role string, f func() error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	h, ok := t.handles[role]
	if !ok || t.closed {
		return fmt.Errorf("lab: Do: unknown role %q or topology closed", role)
	}
	return inNS(h, f)
}

// Close removes the topology: deletes its veths and its namespaces, and releases its lock.
// It is idempotent. Processes still running inside a namespace keep that namespace alive
// (unnamed, unreachable from the host) until they exit: stop them before Close.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	// Deleting one end of a veth deletes its peer; do it explicitly (rather than leave it
	// to the namespace's destruction, which the kernel runs asynchronously).
	for _, l := range []struct{ role, link string }{{RoleClient, ClientLink}, {RoleServer, ServerLink}} {
		h, ok := t.handles[l.role]
		if !ok {
			continue
		}
		nh, err := netlink.NewHandleAt(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if link, err := nh.LinkByName(l.link); err == nil {
			if err := nh.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("lab: delete %s in %s: %w", l.link, t.NetNS(l.role), err))
			}
		}
		nh.Close()
	}
	for _, h := range t.handles {
		h.Close()
	}
	t.handles = map[string]netns.NsHandle{}
	for _, name := range t.created {
		if _, err := deleteNS(name); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	t.created = nil
	if t.lock != nil {
		if err := t.lock.release(); err != nil {
			errs = append(errs, fmt.Errorf("lab: release lock: %w", err))
		}
		t.lock = nil
	}
	if len(errs) == 0 {
		t.log.Debug("lab removed")
	}
	return errors.Join(errs...)
}
