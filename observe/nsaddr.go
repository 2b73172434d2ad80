package observe

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsPath turns a namespace as Options.NetNS takes it (an `ip netns` name or a path) into
// a path.
func nsPath(ns string) string {
	if strings.ContainsRune(ns, '/') {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}

// namespaceAddrs lists the interface addresses of a network namespace (named as
// Options.NetNS takes it; "" the current one). A side whose address is one of them lives
// where sock_diag polls: the absence of its timewait socket then means it really closed,
// even when no poll ever caught one of its sockets (a connection shorter than the poll
// interval).
func namespaceAddrs(ns string) ([]netip.Addr, error) {
	var h *netlink.Handle
	var err error
	if ns == "" {
		h, err = netlink.NewHandle()
	} else {
		nsh, nerr := netns.GetFromPath(nsPath(ns))
		if nerr != nil {
			return nil, fmt.Errorf("network namespace %q: %w", ns, nerr)
		}
		defer nsh.Close()
		h, err = netlink.NewHandleAt(nsh)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink in %q: %w", ns, err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %q: %w", ns, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
