package nfq

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Names finproxy uses in the iptables ruleset.
const (
	// Table is the iptables table every finproxy rule lives in.
	Table = "mangle"
	// ChainPrefix starts the name of every chain finproxy creates; Cleanup removes them
	// all, but those of live runs.
	ChainPrefix = "FINPROXY"
	// Comment starts the comment of every rule finproxy adds to a built-in chain (and, when
	// the spec has an Owner, to its own chain): "finproxy pid=P start=S" names the owner.
	Comment = "finproxy"
	// DefaultConnMark is the connmark bit used by Scope FromFIN and All when HookSpec.ConnMark is 0.
	DefaultConnMark uint32 = 0x00f10000
)

// ChainName is the name of finproxy's chain for queue num: FINPROXY-Q<num>.
func ChainName(num uint16) string { return ChainPrefix + "-Q" + strconv.Itoa(int(num)) }

// Mode says where in the stack segments are taken.
type Mode int

const (
	// Local queues segments of connections that end on this host (namespace):
	// mangle OUTPUT, and mangle INPUT for traffic not on loopback (loopback
	// traffic is queued once, in OUTPUT).
	Local Mode = iota
	// Forward queues segments routed through this host (namespace): mangle FORWARD.
	Forward
)

func (m Mode) String() string {
	switch m {
	case Local:
		return "local"
	case Forward:
		return "forward"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Scope says which segments of a matching connection are queued.
type Scope int

const (
	// Control queues only SYN, FIN and RST segments (SYN-ACK and FIN-ACK included):
	// bulk data never leaves the kernel.
	Control Scope = iota
	// FromFIN queues what Control does, plus every segment of a connection once a
	// FIN of it passed (a connmark bit remembers it), so the teardown is seen whole,
	// and every segment conntrack finds INVALID (it has no connection to carry the
	// mark: a delayed or duplicated segment, one whose port finproxy rewrote).
	FromFIN
	// All queues every segment of a connection whose SYN passed after the hooks
	// were installed (plus FIN and RST of older ones, and INVALID segments as
	// FromFIN does).
	All
)

func (s Scope) String() string {
	switch s {
	case Control:
		return "control"
	case FromFIN:
		return "from-fin"
	case All:
		return "all"
	}
	return "Scope(" + strconv.Itoa(int(s)) + ")"
}

// HookSpec says which TCP segments the hooks send to an NFQUEUE.
// Make one with NewHookSpec to get the defaults.
type HookSpec struct {
	Mode  Mode
	Queue uint16 // NFQUEUE number
	// Queues > 1 spreads the segments over the queues Queue to Queue+Queues-1 with
	// --queue-balance, the kernel's flow hash: it hashes the source and destination
	// addresses (not the ports), so both directions of a connection, and every connection
	// between the same two hosts, land on the same queue. 0 or 1: one queue.
	Queues uint16
	// Port is the server port; 0 means any port (then Addrs must be given).
	Port uint16
	// Ports are further server ports: with them, the hooks queue the connections to any
	// of Port and Ports (one multiport match).
	Ports []uint16
	// Addrs are the server addresses; empty means any. They also pick the
	// families: IPv4 prefixes need ipt4, IPv6 ones ipt6; with none, every
	// family Install is given is hooked.
	Addrs []netip.Prefix
	Scope Scope
	// NoHandshake: SYN segments (SYN and SYN|ACK) are neither queued nor, where the
	// scope allows, sent to the chain at all: the rules act on the teardown only, and a
	// connection's connect() never waits for finproxy.
	NoHandshake bool
	// Bypass adds --queue-bypass: while no process is bound to the queue,
	// packets pass instead of being dropped (traffic flows if finproxy dies).
	// NewHookSpec sets it.
	Bypass bool
	// SkipMark: packets carrying all of these fwmark bits (finproxy's own
	// injected segments) are never queued. 0 means no exception.
	SkipMark uint32
	// ConnMark is the connmark bit used by Scope FromFIN and All;
	// 0 means DefaultConnMark.
	ConnMark uint32
	// Logger receives notes about stale chains; nil means slog.Default().
	Logger *slog.Logger
	// Owner is the process the hooks belong to (usually Self()). It is written in the
	// comment of every rule the hooks add, so that Cleanup spares the hooks of a live
	// run, RemoveOwned removes exactly those of a dead one, and Install finds a live run
	// hooking the same scope. Zero: the rules carry a plain "finproxy" and count as stale.
	Owner Owner
	// Stack lets Install hook a scope a live run of another Owner hooks already (a
	// ConflictError otherwise). The later run's jumps go first: the segments both runs
	// match reach only the later run while it runs.
	Stack bool
	// Redirected (Local mode): connections are redirected to the server port by DNAT in
	// nat OUTPUT (InstallRedirects). Their segments toward the server carry the address
	// they were sent to until nat OUTPUT, after mangle OUTPUT, so they are taken in mangle
	// POSTROUTING instead, where both directions carry the server's address and port.
	Redirected bool
	// Chain names finproxy's chain; "" means ChainName(Queue). It must start with
	// ChainPrefix (Cleanup finds it). A second set of hooks for the same queue, in
	// another chain, can be installed before the first is removed.
	Chain string
}

// NewHookSpec returns a spec with the defaults: Bypass on, Scope Control.
func NewHookSpec(mode Mode, queue uint16) HookSpec {
	return HookSpec{Mode: mode, Queue: queue, Bypass: true}
}

// ErrNoScope is returned by Install for a spec with neither Port nor Addrs:
// finproxy would queue every TCP segment of the host.
var ErrNoScope = errors.New("no target scope: give a port or an address")

func (s HookSpec) connMark() uint32 {
	if s.ConnMark == 0 {
		return DefaultConnMark
	}
	return s.ConnMark
}

func (s HookSpec) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func (s HookSpec) validate() error {
	if s.Port == 0 && len(s.Addrs) == 0 {
		return ErrNoScope
	}
	if len(s.Ports) > 0 && (s.Port == 0 || slices.Contains(s.Ports, 0) || len(s.Ports) > 14) {
		return fmt.Errorf("nfq: ports %d and %v: want up to 15 ports, none of them 0", s.Port, s.Ports)
	}
	if s.Redirected && s.Mode != Local {
		return errors.New("nfq: Redirected is for the Local mode (in Forward mode the hooks see the redirected segments as they are)")
	}
	if s.Chain != "" && (!strings.HasPrefix(s.Chain, ChainPrefix) || len(s.Chain) > 28) {
		return fmt.Errorf("nfq: chain %q: want a name of up to 28 characters starting with %s", s.Chain, ChainPrefix)
	}
	if s.Queues > 1 && int(s.Queue)+int(s.Queues)-1 > 0xffff {
		return fmt.Errorf("nfq: queues %d to %d: queue numbers go up to 65535", s.Queue, int(s.Queue)+int(s.Queues)-1)
	}
	if s.Mode != Local && s.Mode != Forward {
		return fmt.Errorf("nfq: unknown hook mode %d (want Local or Forward)", int(s.Mode))
	}
	if s.Scope != Control && s.Scope != FromFIN && s.Scope != All {
		return fmt.Errorf("nfq: unknown hook scope %d (want Control, FromFIN or All)", int(s.Scope))
	}
	if s.Scope != Control && s.SkipMark&s.connMark() != 0 {
		return fmt.Errorf("nfq: SkipMark %#x and ConnMark %#x share bits; pick distinct bits", s.SkipMark, s.connMark())
	}
	for _, p := range s.Addrs {
		if !p.IsValid() {
			return fmt.Errorf("nfq: invalid server address prefix %v", p)
		}
		if p.Addr().Is4In6() {
			return fmt.Errorf("nfq: server address %v is IPv4-mapped IPv6; give it as IPv4", p)
		}
	}
	return nil
}

func hexMark(m uint32) string { return fmt.Sprintf("%#x/%#x", m, m) }

// chainRules are the rules of FINPROXY-Q<num>, in order. They are written the
// way `iptables -S` prints them, so a listing round-trips.
func chainRules(s HookSpec) [][]string {
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(s.Queue))}
	if s.Queues > 1 {
		queue = []string{"-j", "NFQUEUE", "--queue-balance", fmt.Sprintf("%d:%d", s.Queue, int(s.Queue)+int(s.Queues)-1)}
	}
	if s.Bypass {
		queue = append(queue, "--queue-bypass")
	}
	flags := func(f string) []string { return []string{"-p", "tcp", "-m", "tcp", "--tcp-flags", f, f} }
	var rules [][]string
	if s.SkipMark != 0 {
		rules = append(rules, []string{"-m", "mark", "--mark", hexMark(s.SkipMark), "-j", "RETURN"})
	}
	cm := hexMark(s.connMark())
	switch s.Scope {
	case FromFIN:
		rules = append(rules, slices.Concat(flags("FIN"), []string{"-j", "CONNMARK", "--set-xmark", cm}))
	case All:
		rules = append(rules, slices.Concat(flags("SYN"), []string{"-j", "CONNMARK", "--set-xmark", cm}))
	}
	if s.Scope != Control {
		rules = append(rules, slices.Concat([]string{"-m", "connmark", "--mark", cm}, queue))
	}
	// A segment conntrack finds INVALID (out of its window or state: delayed, duplicated,
	// or with a rewritten port) has no connection, so no connmark: queue it too, or it
	// would slip past the rules. In every scope, Control included (where it only sees
	// SYN, FIN and RST, queued anyway): a rule using conntrack makes the kernel reassemble
	// IPv4 and IPv6 fragments in this namespace before the mangle hooks (nf_defrag_ipv4
	// and nf_defrag_ipv6, priority -400 in PREROUTING and OUTPUT, are turned on with
	// conntrack and off again when its last user goes). Without it the FORWARD hook, and
	// for IPv6 the INPUT hook too, see fragments: the later ones carry no TCP header and
	// do not match, a tiny first one does not match either, and a FIN in fragments
	// passes unseen (TestNoBypassForward, TestNoBypassLocal in e2e).
	rules = append(rules, slices.Concat([]string{"-m", "conntrack", "--ctstate", "INVALID"}, queue))
	for _, f := range []string{"SYN", "FIN", "RST"} {
		if f == "SYN" && s.NoHandshake {
			continue
		}
		rules = append(rules, slices.Concat(flags(f), queue))
	}
	if !s.Owner.IsZero() {
		// Tag each rule with the owner, before its target (where iptables -S prints it).
		c := []string{"-m", "comment", "--comment", s.Owner.comment()}
		for i, r := range rules {
			j := slices.Index(r, "-j")
			rules[i] = slices.Concat(r[:j], c, r[j:])
		}
	}
	return rules
}

type rule struct {
	chain string
	spec  []string
}

func (r rule) String() string { return "-A " + r.chain + " " + renderSpec(r.spec) }

// jumpRules are the rules sending segments from built-in chains to chain, for
// the given server prefixes of one family (nil: any address).
func jumpRules(s HookSpec, chain string, addrs []netip.Prefix) []rule {
	type hook struct{ chain, iface string }
	var hooks []hook
	if s.Mode == Forward {
		hooks = []hook{{"FORWARD", ""}}
	} else {
		hooks = []hook{{"OUTPUT", ""}, {"INPUT", "lo"}}
	}
	targets := []string{""}
	if len(addrs) > 0 {
		targets = targets[:0]
		for _, p := range addrs {
			targets = append(targets, p.Masked().String())
		}
	}
	var out []rule
	for _, h := range hooks {
		for _, addr := range targets {
			for _, toServer := range []bool{true, false} {
				var r []string
				if addr != "" {
					if toServer {
						r = append(r, "-d", addr)
					} else {
						r = append(r, "-s", addr)
					}
				}
				if h.iface != "" {
					r = append(r, "!", "-i", h.iface)
				}
				r = append(r, "-p", "tcp")
				if ports := s.allPorts(); len(ports) > 1 {
					dir := "--sports"
					if toServer {
						dir = "--dports"
					}
					r = append(r, "-m", "multiport", dir, ports)
				}
				if s.Port != 0 && len(s.Ports) == 0 || s.Scope == Control || s.NoHandshake {
					r = append(r, "-m", "tcp")
				}
				if s.Port != 0 && len(s.Ports) == 0 {
					if toServer {
						r = append(r, "--dport", strconv.Itoa(int(s.Port)))
					} else {
						r = append(r, "--sport", strconv.Itoa(int(s.Port)))
					}
				}
				switch {
				case s.Scope == Control && s.NoHandshake:
					// Only FIN and RST are queued: nothing else enters the chain.
					r = append(r, "!", "--tcp-flags", "FIN,RST", "NONE")
				case s.Scope == Control:
					// Only SYN, FIN and RST are queued: the rest (bulk data) need not even
					// enter the chain, which saves a few rule evaluations per packet.
					r = append(r, "!", "--tcp-flags", "FIN,SYN,RST", "NONE")
				case s.NoHandshake:
					// The handshake's SYN and SYN|ACK stay out of the chain.
					r = append(r, "!", "--tcp-flags", "SYN", "SYN")
				}
				r = append(r, "-m", "comment", "--comment", s.Owner.comment(), "-j", chain)
				out = append(out, rule{h.chain, r})
				if h.chain == "OUTPUT" && toServer && s.Redirected {
					// The redirected segments toward the server, after nat OUTPUT translated them
					// (ORIGINAL: not the server's own answers, which OUTPUT took).
					j := slices.Index(r, "-m")
					pr := slices.Concat(r[:j], []string{"-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL"}, r[j:])
					out = append(out, rule{"POSTROUTING", pr})
				}
			}
		}
	}
	return out
}

// allPorts joins Port and Ports for a multiport match ("" when there is one port or none).
func (s HookSpec) allPorts() string {
	if len(s.Ports) == 0 {
		return ""
	}
	ps := []string{}
	for _, p := range slices.Concat([]uint16{s.Port}, s.Ports) {
		if p != 0 && !slices.Contains(ps, strconv.Itoa(int(p))) {
			ps = append(ps, strconv.Itoa(int(p)))
		}
	}
	return strings.Join(ps, ",")
}

// Hooks are the rules one Install added; Remove takes them out again.
type Hooks struct {
	spec HookSpec
	fams []*famHooks
}

type famHooks struct {
	name   string // "ipv4" or "ipv6"
	ipt    IPTables
	chain  string
	made   bool   // chain created and not yet removed
	jumps  []rule // inserted and not yet removed
	chainR [][]string
}

type family struct {
	name  string
	ipt   IPTables
	addrs []netip.Prefix
}

// families picks the families to hook from the addresses and the available iptables.
func families(ipt4, ipt6 IPTables, s HookSpec) ([]family, error) {
	var v4, v6 []netip.Prefix
	for _, p := range s.Addrs {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	var fams []family
	if len(s.Addrs) == 0 {
		if ipt4 != nil {
			fams = append(fams, family{"ipv4", ipt4, nil})
		}
		if ipt6 != nil {
			fams = append(fams, family{"ipv6", ipt6, nil})
		}
		if len(fams) == 0 {
			return nil, errors.New("nfq: no iptables given for either IPv4 or IPv6")
		}
		return fams, nil
	}
	if len(v4) > 0 {
		if ipt4 == nil {
			return nil, fmt.Errorf("nfq: server address %v is IPv4 but no IPv4 iptables is available (install iptables)", v4[0])
		}
		fams = append(fams, family{"ipv4", ipt4, v4})
	}
	if len(v6) > 0 {
		if ipt6 == nil {
			return nil, fmt.Errorf("nfq: server address %v is IPv6 but no IPv6 iptables is available (install iptables, which provides ip6tables)", v6[0])
		}
		fams = append(fams, family{"ipv6", ipt6, v6})
	}
	return fams, nil
}

// Install adds the hooks spec describes: finproxy's chain FINPROXY-Q<queue> in
// the mangle table and the jumps to it from the built-in chains, for each family
// wanted (ipt4 or ipt6 may be nil when that family is not wanted or available).
//
// Install only after the queue is bound (Open): with no process bound,
// --queue-bypass lets traffic pass, without it every matching packet is dropped.
// Binding also proves no live finproxy uses the queue, so a chain of that name
// that already exists is stale (a crashed run): Install removes it and its
// jumps first and logs that.
//
// Before it changes anything, Install looks for the jumps of live runs of another Owner
// in the built-in chains it would hook: if one hooks an overlapping scope (same hook
// chain and direction, same port or any, overlapping addresses or any), the two runs
// would undo each other (the later one's jumps go first, the earlier one would see
// nothing), and Install returns a *ConflictError naming that run, unless spec.Stack.
//
// On error, Install removes whatever it had added.
func Install(ipt4, ipt6 IPTables, spec HookSpec) (*Hooks, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	fams, err := families(ipt4, ipt6, spec)
	if err != nil {
		return nil, err
	}
	h := &Hooks{spec: spec}
	chain := ChainName(spec.Queue)
	if spec.Chain != "" {
		chain = spec.Chain
	}
	for _, f := range fams {
		others, err := overlapping(f, spec, jumpRules(spec, chain, f.addrs))
		if err != nil {
			return nil, err
		}
		for _, c := range others {
			if !spec.Stack {
				return nil, c
			}
			spec.logger().Warn("nfq: hooking a scope another live finproxy run hooks (stacked on request): "+
				"while this run runs, the segments both runs match reach only this run",
				"family", c.Family, "other_pid", c.Other.PID, "other_queue", c.Queue, "other_rule", c.Rule)
		}
	}
	for _, f := range fams {
		fh := &famHooks{name: f.name, ipt: f.ipt, chain: chain, chainR: chainRules(spec)}
		h.fams = append(h.fams, fh)
		if err := fh.install(spec, jumpRules(spec, chain, f.addrs)); err != nil {
			if rerr := h.Remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("nfq: undoing the partial install also failed (run `finproxy cleanup` or remove chain %s by hand): %w", chain, rerr))
			}
			return nil, err
		}
	}
	return h, nil
}

func (fh *famHooks) install(spec HookSpec, jumps []rule) error {
	ipt := fh.ipt
	exists, err := ipt.ChainExists(Table, fh.chain)
	if err != nil {
		return fmt.Errorf("nfq: %s: look for chain %s in table %s: %w", fh.name, fh.chain, Table, err)
	}
	if exists {
		removed, err := removeChains(ipt, func(c string, _ []Owner) bool { return c == fh.chain }, nil)
		spec.logger().Warn("nfq: removed a stale finproxy chain left by an earlier run that did not clean up",
			"family", fh.name, "table", Table, "chain", fh.chain, "removed", removed)
		if err != nil {
			return fmt.Errorf("nfq: %s: remove stale chain %s (left by an earlier run): %w", fh.name, fh.chain, err)
		}
	}
	if err := ipt.NewChain(Table, fh.chain); err != nil {
		return fmt.Errorf("nfq: %s: create chain %s in table %s: %w", fh.name, fh.chain, Table, err)
	}
	fh.made = true
	// The chain is complete before any jump leads to it.
	for _, r := range fh.chainR {
		if err := ipt.Append(Table, fh.chain, r...); err != nil {
			return fmt.Errorf("nfq: %s: append to %s in table %s: %s: %w", fh.name, fh.chain, Table, renderSpec(r), err)
		}
	}
	// Insert in reverse so the jumps read in order at the top of each chain.
	for i := len(jumps) - 1; i >= 0; i-- {
		j := jumps[i]
		if err := ipt.Insert(Table, j.chain, 1, j.spec...); err != nil {
			return fmt.Errorf("nfq: %s: insert into %s in table %s: %s: %w", fh.name, j.chain, Table, renderSpec(j.spec), err)
		}
		fh.jumps = append(fh.jumps, j)
	}
	return nil
}

// Rules lists the rules the hooks put in place, as `iptables -t mangle -S` would
// print them, prefixed with the family ("ipv4: -A OUTPUT ...").
func (h *Hooks) Rules() []string {
	var out []string
	for _, fh := range h.fams {
		out = append(out, fh.name+": -N "+fh.chain)
		for _, r := range fh.chainR {
			out = append(out, fh.name+": "+rule{fh.chain, r}.String())
		}
		// fh.jumps holds them in insertion (reverse) order.
		for i := len(fh.jumps) - 1; i >= 0; i-- {
			out = append(out, fh.name+": "+fh.jumps[i].String())
		}
	}
	return out
}

// Remove takes out exactly the rules and chains Install added: the chain's rules
// first (one flush per family, so both directions stop being queued together), then
// the jumps, then the chain. It is idempotent: what was removed is not touched again, and
// what failed is tried again on the next call. Errors are joined.
func (h *Hooks) Remove() error {
	if h == nil {
		return nil
	}
	var errs []error
	// First the chain's rules, in one step per family: queueing stops for both
	// directions of a connection at once. Deleting the jumps one by one would leave a
	// moment when one direction is still queued and the other not (a FIN passing
	// unseen while the ACK answering it is queued and logged).
	for _, fh := range h.fams {
		if !fh.made || len(fh.jumps) == 0 {
			continue
		}
		ok, err := fh.ipt.ChainExists(Table, fh.chain)
		if err == nil && !ok {
			// Removed by someone else (`finproxy cleanup --force`): no jump can lead to a
			// chain that does not exist, so nothing of these hooks is left.
			h.spec.logger().Warn("nfq: finproxy's chain had been removed by someone else (finproxy cleanup --force?): nothing was queued since",
				"family", fh.name, "table", Table, "chain", fh.chain)
			fh.jumps, fh.made = nil, false
			continue
		}
		if err == nil {
			if err := fh.ipt.ClearChain(Table, fh.chain); err != nil {
				errs = append(errs, fmt.Errorf("nfq: %s: flush chain %s in table %s: %w", fh.name, fh.chain, Table, err))
			}
		}
	}
	for _, fh := range h.fams {
		var left []rule
		for _, j := range fh.jumps {
			if err := fh.ipt.DeleteIfExists(Table, j.chain, j.spec...); err != nil {
				errs = append(errs, fmt.Errorf("nfq: %s: delete from %s in table %s: %s: %w", fh.name, j.chain, Table, renderSpec(j.spec), err))
				left = append(left, j)
			}
		}
		fh.jumps = left
		if fh.made && len(left) == 0 {
			if err := fh.ipt.ClearAndDeleteChain(Table, fh.chain); err != nil {
				errs = append(errs, fmt.Errorf("nfq: %s: delete chain %s in table %s: %w", fh.name, fh.chain, Table, err))
			} else {
				fh.made = false
			}
		} else if fh.made {
			errs = append(errs, fmt.Errorf("nfq: %s: chain %s kept: jumps to it could not be removed", fh.name, fh.chain))
		}
	}
	return errors.Join(errs...)
}

// LiveRun is a finproxy chain Cleanup kept because a process it names is alive.
type LiveRun struct {
	Chain  string
	Owners []Owner // the live ones
}

// Cleanup removes every finproxy chain (name starting with FINPROXY) in the mangle table
// and every rule jumping to one or tagged with finproxy's comment, and the tagged DNAT
// rules of the nat table (InstallRedirects), whichever run added them (crashed ones too), except those of live runs: a chain one of whose rules, or of
// the rules jumping to it, names an Owner that is alive is kept with its jumps (and
// reported in live), unless force. Rules without an owner (an older finproxy's, or a
// spec without Owner) count as stale. It reports what it removed, one line per rule or
// chain.
func Cleanup(ipt IPTables, force bool) (removed []string, live []LiveRun, err error) {
	keep := func(c string, owners []Owner) bool {
		if force || !strings.HasPrefix(c, ChainPrefix) {
			return false
		}
		var alive []Owner
		for _, o := range owners {
			if o.Alive() {
				alive = append(alive, o)
			}
		}
		if len(alive) > 0 {
			live = append(live, LiveRun{Chain: c, Owners: alive})
			return true
		}
		return false
	}
	removed, err = removeChains(ipt,
		func(c string, owners []Owner) bool { return strings.HasPrefix(c, ChainPrefix) && !keep(c, owners) },
		func(r listedRule) bool { return force || !r.owner.Alive() })
	nat, nerr := removeNAT(ipt, func(r listedRule) bool { return force || !r.owner.Alive() })
	return append(removed, nat...), live, errors.Join(err, nerr)
}

// RemoveOwned removes the hooks of owner o alone: the finproxy chains o's rules are in
// or jump to, and every rule tagged with o (its redirections in the nat table too). Run it when o is dead (a watchdog does,
// when the run it watches was killed); it never touches the hooks of another owner, so
// what o removed itself before it died, and what a later run installed, stay as they are.
func RemoveOwned(ipt IPTables, o Owner) (removed []string, err error) {
	if o.IsZero() {
		return nil, errors.New("nfq: RemoveOwned of the unknown owner")
	}
	removed, err = removeChains(ipt,
		func(c string, owners []Owner) bool {
			return strings.HasPrefix(c, ChainPrefix) && slices.Contains(owners, o)
		},
		func(r listedRule) bool { return r.owner == o })
	nat, nerr := removeNAT(ipt, func(r listedRule) bool { return r.owner == o })
	return append(removed, nat...), errors.Join(err, nerr)
}

// listedRule is one rule of an `iptables -S` listing.
type listedRule struct {
	chain, line string
	spec        []string
	owner       Owner
	tagged      bool // carries a finproxy comment
}

// listTable lists the chains of Table and their rules.
func listTable(ipt IPTables) (chains []string, rules []listedRule, err error) {
	chains, err = ipt.ListChains(Table)
	if err != nil {
		return nil, nil, fmt.Errorf("nfq: list chains of table %s: %w", Table, err)
	}
	var errs []error
	for _, c := range chains {
		lines, err := ipt.List(Table, c)
		if err != nil {
			errs = append(errs, fmt.Errorf("nfq: list chain %s of table %s: %w", c, Table, err))
			continue
		}
		for _, line := range lines {
			chain, spec, ok := parseRuleLine(line)
			if !ok || chain != c {
				continue
			}
			r := listedRule{chain: c, line: line, spec: spec}
			if cm, ok := ruleComment(spec); ok {
				r.owner, r.tagged = parseComment(cm)
			}
			rules = append(rules, r)
		}
	}
	return chains, rules, errors.Join(errs...)
}

// removeChains removes the chains of Table that dropChain picks (given the owners named
// by their rules and by the rules jumping to them), every rule that jumps to one, and,
// with dropTagged, every finproxy-tagged rule it picks outside those chains.
func removeChains(ipt IPTables, dropChain func(chain string, owners []Owner) bool, dropTagged func(listedRule) bool) (removed []string, err error) {
	chains, rules, err := listTable(ipt)
	if chains == nil {
		return nil, err
	}
	errs := []error{err}
	owners := map[string][]Owner{}
	add := func(c string, o Owner) {
		if !slices.Contains(owners[c], o) {
			owners[c] = append(owners[c], o)
		}
	}
	for _, r := range rules {
		if r.tagged {
			add(r.chain, r.owner)
			add(ruleTarget(r.spec), r.owner)
		}
	}
	drop := map[string]bool{}
	for _, c := range chains {
		if dropChain(c, owners[c]) {
			drop[c] = true
		}
	}
	for _, r := range rules {
		if drop[r.chain] || strings.HasPrefix(r.chain, ChainPrefix) {
			continue // flushed with its chain, or kept with it
		}
		target := ruleTarget(r.spec)
		if !drop[target] && !(r.tagged && dropTagged != nil && dropTagged(r) && !strings.HasPrefix(target, ChainPrefix)) {
			continue
		}
		if err := ipt.DeleteIfExists(Table, r.chain, r.spec...); err != nil {
			errs = append(errs, fmt.Errorf("nfq: delete rule %q: %w", r.line, err))
			continue
		}
		removed = append(removed, Table+": "+r.line)
	}
	for _, c := range chains {
		if !drop[c] {
			continue
		}
		if err := ipt.ClearAndDeleteChain(Table, c); err != nil {
			errs = append(errs, fmt.Errorf("nfq: delete chain %s of table %s: %w", c, Table, err))
			continue
		}
		removed = append(removed, Table+": -X "+c)
	}
	return removed, errors.Join(errs...)
}

// ruleTarget returns the chain a rule jumps (-j) or goes (-g) to.
func ruleTarget(spec []string) string {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" || spec[i] == "-g" || spec[i] == "--jump" || spec[i] == "--goto" {
			return spec[i+1]
		}
	}
	return ""
}

// parseRuleLine splits a `-A CHAIN args...` line of `iptables -S` into the chain
// and the rulespec, undoing iptables' double quoting. Other lines give ok=false.
func parseRuleLine(line string) (chain string, spec []string, ok bool) {
	toks, err := splitQuoted(line)
	if err != nil || len(toks) < 2 || toks[0] != "-A" {
		return "", nil, false
	}
	return toks[1], toks[2:], true
}

// splitQuoted splits s at blanks, honouring double quotes and backslash escapes
// inside them, as iptables -S writes (for example --comment "a b").
func splitQuoted(s string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	inTok, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
			inTok = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inTok {
				toks = append(toks, cur.String())
				cur.Reset()
				inTok = false
			}
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unbalanced quote in %q", s)
	}
	if inTok {
		toks = append(toks, cur.String())
	}
	return toks, nil
}

// renderSpec joins a rulespec the way iptables -S prints it, quoting arguments
// that contain blanks or quotes.
func renderSpec(spec []string) string {
	parts := make([]string, len(spec))
	for i, a := range spec {
		if a == "" || strings.ContainsAny(a, " \t\"\\") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}
