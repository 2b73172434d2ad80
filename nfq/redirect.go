package nfq

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// NATTable is the table the redirections live in.
const NATTable = "nat"

// Redirect sends the connections made to Listen to Upstream, in the kernel (DNAT): no
// process copies the stream. Listen's address may be unspecified (0.0.0.0 or ::): every
// address of the namespace on that port.
type Redirect struct {
	Listen   netip.AddrPort
	Upstream netip.AddrPort
}

func (r Redirect) String() string { return r.Listen.String() + " -> " + r.Upstream.String() }

func (r Redirect) validate() error {
	switch {
	case !r.Upstream.IsValid() || r.Upstream.Addr().IsUnspecified() || r.Upstream.Port() == 0:
		return fmt.Errorf("nfq: redirect %v: want an upstream address and port", r)
	case !r.Listen.IsValid() || r.Listen.Port() == 0:
		return fmt.Errorf("nfq: redirect %v: want a listen port", r)
	case r.Listen.Addr().Is4() != r.Upstream.Addr().Is4():
		return fmt.Errorf("nfq: redirect %v: listen and upstream are of different families", r)
	case r.Listen.Addr().Is4In6() || r.Upstream.Addr().Is4In6():
		return fmt.Errorf("nfq: redirect %v: give IPv4 addresses as IPv4", r)
	}
	return nil
}

// natRules are the DNAT rules of r: in nat OUTPUT for the clients of this namespace, in
// nat PREROUTING for those that come from elsewhere.
func natRules(r Redirect, o Owner) []rule {
	var m []string
	if !r.Listen.Addr().IsUnspecified() {
		m = append(m, "-d", netip.PrefixFrom(r.Listen.Addr(), r.Listen.Addr().BitLen()).String())
	}
	m = append(m, "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(r.Listen.Port())),
		"-m", "comment", "--comment", o.comment(), "-j", "DNAT", "--to-destination", r.Upstream.String())
	return []rule{{"OUTPUT", m}, {"PREROUTING", slices.Clone(m)}}
}

// Redirects are the DNAT rules one InstallRedirects added; Remove takes them out again.
type Redirects struct {
	added []natRule
}

type natRule struct {
	ipt IPTables
	fam string
	r   rule
}

// InstallRedirects adds the DNAT rules of rs (IPv4 ones to ipt4, IPv6 ones to ipt6), each
// tagged with owner o as the hooks are, so that Cleanup and RemoveOwned (the watchdog)
// find them. Install the hooks of the upstreams before, so that the first redirected
// segment is seen; remove them after. On error, InstallRedirects removes what it added.
func InstallRedirects(ipt4, ipt6 IPTables, o Owner, rs []Redirect) (*Redirects, error) {
	out := &Redirects{}
	for _, r := range rs {
		err := r.validate()
		ipt, fam := ipt4, "ipv4"
		if r.Upstream.Addr().Is6() {
			ipt, fam = ipt6, "ipv6"
		}
		if err == nil && ipt == nil {
			err = fmt.Errorf("nfq: redirect %v: no %s iptables available (install iptables)", r, fam)
		}
		if err == nil {
			err = redirectTaken(ipt, fam, r, o)
		}
		for _, nr := range natRules(r, o) {
			if err != nil {
				break
			}
			if err = ipt.Insert(NATTable, nr.chain, 1, nr.spec...); err != nil {
				err = fmt.Errorf("nfq: %s: insert into %s in table %s: %s: %w", fam, nr.chain, NATTable, renderSpec(nr.spec), err)
				break
			}
			out.added = append(out.added, natRule{ipt, fam, nr})
		}
		if err != nil {
			if rerr := out.Remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("nfq: undoing the partial install also failed (run `finproxy cleanup`): %w", rerr))
			}
			return nil, err
		}
	}
	return out, nil
}

// Rules lists the rules in place, as `iptables -t nat -S` prints them, prefixed with the
// family.
func (rd *Redirects) Rules() []string {
	if rd == nil {
		return nil
	}
	var out []string
	for _, a := range rd.added {
		out = append(out, a.fam+": nat "+a.r.String())
	}
	return out
}

// Remove takes out exactly the rules InstallRedirects added. It is idempotent: what failed
// is tried again on the next call. Existing connections keep their translation (conntrack
// holds it): only new connections to Listen stop being redirected.
func (rd *Redirects) Remove() error {
	if rd == nil {
		return nil
	}
	var errs []error
	var left []natRule
	for _, a := range rd.added {
		if err := a.ipt.DeleteIfExists(NATTable, a.r.chain, a.r.spec...); err != nil {
			errs = append(errs, fmt.Errorf("nfq: %s: delete from %s in table %s: %s: %w", a.fam, a.r.chain, NATTable, renderSpec(a.r.spec), err))
			left = append(left, a)
		}
	}
	rd.added = left
	return errors.Join(errs...)
}

// redirectTaken returns an error when a live finproxy of another owner redirects the
// same listen port (on an overlapping address) already: the newer rule would go first
// and the other run's connections would reach this run's upstream.
func redirectTaken(ipt IPTables, fam string, r Redirect, o Owner) error {
	lines, err := ipt.List(NATTable, "OUTPUT")
	if err != nil {
		return fmt.Errorf("nfq: %s: list chain OUTPUT of table %s: %w", fam, NATTable, err)
	}
	for _, line := range lines {
		_, spec, ok := parseRuleLine(line)
		if !ok {
			continue
		}
		cm, ok := ruleComment(spec)
		if !ok {
			continue
		}
		other, ours := parseComment(cm)
		if !ours || other == o || other.IsZero() || !other.Alive() {
			continue
		}
		js := scopeOf("OUTPUT", spec)
		if js.port != r.Listen.Port() {
			continue
		}
		if js.addr.IsValid() && !r.Listen.Addr().IsUnspecified() && !js.addr.Contains(r.Listen.Addr()) {
			continue
		}
		return fmt.Errorf("nfq: redirect %v: another finproxy (pid %d) redirects that listen port in this network namespace (%s: %s)",
			r, other.PID, fam, line)
	}
	return nil
}

// removeNAT removes the finproxy-tagged rules of the nat table's OUTPUT and PREROUTING
// chains that drop picks, and reports them.
func removeNAT(ipt IPTables, drop func(listedRule) bool) (removed []string, err error) {
	var errs []error
	for _, c := range []string{"OUTPUT", "PREROUTING"} {
		lines, err := ipt.List(NATTable, c)
		if err != nil {
			errs = append(errs, fmt.Errorf("nfq: list chain %s of table %s: %w", c, NATTable, err))
			continue
		}
		for _, line := range lines {
			chain, spec, ok := parseRuleLine(line)
			if !ok || chain != c {
				continue
			}
			cm, ok := ruleComment(spec)
			if !ok {
				continue
			}
			r := listedRule{chain: c, line: line, spec: spec}
			if r.owner, r.tagged = parseComment(cm); !r.tagged || !drop(r) {
				continue
			}
			if err := ipt.DeleteIfExists(NATTable, c, spec...); err != nil {
				errs = append(errs, fmt.Errorf("nfq: delete rule %q of table %s: %w", line, NATTable, err))
				continue
			}
			removed = append(removed, NATTable+": "+line)
		}
	}
	return removed, errors.Join(errs...)
}
