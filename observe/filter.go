package observe

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Filter selects the connections to observe. A connection matches when one of its ends
// has a port in Ports (or Ports is empty) and one of its ends has an address in one of
// Addrs (or Addrs is empty). The tracepoints carry no network namespace: two namespaces
// using the same 4-tuples are told apart only by addresses, so give Addrs when that can
// happen.
type Filter struct {
	Ports []uint16
	Addrs []netip.Prefix
}

// Match reports whether a connection between a and b is selected.
func (f Filter) Match(a, b netip.AddrPort) bool {
	if len(f.Ports) > 0 && !slices.Contains(f.Ports, a.Port()) && !slices.Contains(f.Ports, b.Port()) {
		return false
	}
	if len(f.Addrs) == 0 {
		return true
	}
	for _, p := range f.Addrs {
		if p.Contains(a.Addr().Unmap()) || p.Contains(b.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// portExpr is the tracefs filter expression selecting Ports through fields named sport
// and dport, or "" when there are no ports.
func (f Filter) portExpr() string {
	if len(f.Ports) == 0 {
		return ""
	}
	var terms []string
	for _, p := range uniqPorts(f.Ports) {
		terms = append(terms, fmt.Sprintf("sport == %d || dport == %d", p, p))
	}
	return "(" + strings.Join(terms, " || ") + ")"
}

func uniqPorts(ps []uint16) []uint16 {
	s := slices.Clone(ps)
	slices.Sort(s)
	return slices.Compact(s)
}

// tracefsFilter returns the in-kernel filter for one event ("" for none). Only ports are
// filtered in the kernel (the address fields are byte arrays, which event filters do not
// compare); addresses are filtered when events are applied. tcp_send_reset has no port
// fields (its addresses are sockaddrs), so it is not filtered in the kernel; resets are
// rare.
func (f Filter) tracefsFilter(event string) string {
	ports := f.portExpr()
	switch event {
	case "sock/inet_sock_set_state":
		if ports == "" {
			return "protocol == 6"
		}
		return "protocol == 6 && " + ports
	case "tcp/tcp_retransmit_skb", "tcp/tcp_receive_reset", "tcp/tcp_retransmit_synack":
		return ports
	}
	return ""
}
