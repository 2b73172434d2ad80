package nfq

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ConflictError is Install's refusal to hook a scope a live run of another owner hooks
// already in this network namespace.
type ConflictError struct {
	Family string // "ipv4" or "ipv6"
	Other  Owner  // the live run
	Queue  uint16 // its queue (the number in its chain's name)
	Rule   string // its jump that overlaps ours, as iptables -S prints it
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("nfq: another finproxy run (pid %d, queue %d) hooks an overlapping scope in this network namespace (%s: %s): "+
		"two runs on one scope undo each other (the later one's hooks go first and the earlier one sees nothing)",
		e.Other.PID, e.Queue, e.Family, e.Rule)
}

// jumpScope is what one jump rule selects: the built-in chain, the direction (to or
// from the server), the server's address prefix (invalid: any) and port (0: any).
type jumpScope struct {
	chain    string
	toServer bool
	addr     netip.Prefix
	port     uint16
}

// scopeOf reads a jump rule as jumpRules writes it (and iptables -S prints it).
func scopeOf(chain string, spec []string) jumpScope {
	s := jumpScope{chain: chain}
	for i := 0; i+1 < len(spec); i++ {
		if i > 0 && spec[i-1] == "!" {
			continue
		}
		v := spec[i+1]
		switch spec[i] {
		case "-d", "--destination", "-s", "--source":
			s.toServer = spec[i] == "-d" || spec[i] == "--destination"
			if p, err := netip.ParsePrefix(v); err == nil {
				s.addr = p.Masked()
			} else if a, err := netip.ParseAddr(v); err == nil {
				s.addr = netip.PrefixFrom(a, a.BitLen())
			}
		case "--dport", "--sport", "--destination-port", "--source-port":
			s.toServer = spec[i] == "--dport" || spec[i] == "--destination-port"
			if p, err := strconv.ParseUint(v, 10, 16); err == nil {
				s.port = uint16(p)
			}
		}
	}
	return s
}

// overlaps reports whether a segment could match both jumps.
func (a jumpScope) overlaps(b jumpScope) bool {
	if a.chain != b.chain || a.toServer != b.toServer {
		return false
	}
	if a.port != 0 && b.port != 0 && a.port != b.port {
		return false
	}
	if a.addr.IsValid() && b.addr.IsValid() && !a.addr.Overlaps(b.addr) {
		return false
	}
	return true
}

// overlapping lists the live runs (other than spec.Owner) whose jumps in the built-in
// chains of f overlap the jumps spec would insert: one error per run and chain of theirs.
func overlapping(f family, spec HookSpec, mine []rule) ([]*ConflictError, error) {
	var builtins []string
	for _, j := range mine {
		if !slices.Contains(builtins, j.chain) {
			builtins = append(builtins, j.chain)
		}
	}
	var out []*ConflictError
	seen := map[string]bool{}
	for _, b := range builtins {
		lines, err := f.ipt.List(Table, b)
		if err != nil {
			return nil, fmt.Errorf("nfq: %s: list chain %s of table %s: %w", f.name, b, Table, err)
		}
		for _, line := range lines {
			chain, theirs, ok := parseRuleLine(line)
			target := ruleTarget(theirs)
			if !ok || chain != b || !strings.HasPrefix(target, ChainPrefix) {
				continue
			}
			cm, _ := ruleComment(theirs)
			owner, tagged := parseComment(cm)
			if !tagged || owner == spec.Owner || !owner.Alive() {
				continue
			}
			ts := scopeOf(chain, theirs)
			for _, j := range mine {
				if !scopeOf(j.chain, j.spec).overlaps(ts) {
					continue
				}
				key := fmt.Sprint(owner, target)
				if !seen[key] {
					seen[key] = true
					q, _ := strconv.ParseUint(strings.TrimPrefix(target, ChainPrefix+"-Q"), 10, 16)
					out = append(out, &ConflictError{Family: f.name, Other: owner, Queue: uint16(q), Rule: line})
				}
				break
			}
		}
	}
	return out, nil
}
