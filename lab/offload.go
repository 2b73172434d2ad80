package lab

import (
	"fmt"
	"sort"
	"strings"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netns"
)

// offloadFeatures are the ethtool features (the kernel's names, as `ethtool -k` lists
// them) switched off on every lab veth, so that the segments the kernel
// hands to NFQUEUE and puts on the link are the segments a real network carries:
//   - tso (tx-tcp*-segmentation) and gso (tx-generic-segmentation): no super-segments
//     larger than the MSS;
//   - gro (rx-gro, rx-gro-list, rx-udp-gro-forwarding): no coalescing on receive;
//   - tx checksumming (tx-checksum-*): every segment leaves with its full checksum
//     computed, so captures and rules see valid checksums rather than partial ones.
//
// Features a kernel does not know are skipped; tso, gso and gro are then checked to be off.
var offloadFeatures = []string{
	"tx-tcp-segmentation",
	"tx-tcp-ecn-segmentation",
	"tx-tcp-mangleid-segmentation",
	"tx-tcp6-segmentation",
	"tx-tcp-accecn-segmentation",
	"tx-generic-segmentation",
	"tx-udp-segmentation",
	"rx-gro",
	"rx-gro-list",
	"rx-udp-gro-forwarding",
	"tx-checksum-ipv4",
	"tx-checksum-ip-generic",
	"tx-checksum-ipv6",
	"tx-checksum-sctp",
}

// mustBeOff are the features checked after the change: ethtool's tso, gso and gro.
var mustBeOff = []string{"tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation", "rx-gro"}

// disableOffloads switches the offloads off on the named links inside namespace h.
func disableOffloads(h netns.NsHandle, links ...string) error {
	return inNS(h, func() error {
		// The ethtool ioctl socket belongs to the namespace it is created in, and
		// interface names are resolved there.
		e, err := ethtool.NewEthtool()
		if err != nil {
			return fmt.Errorf("ethtool: %w", err)
		}
		defer e.Close()
		for _, l := range links {
			feats, err := e.Features(l)
			if err != nil {
				return fmt.Errorf("ethtool features of %s: %w", l, err)
			}
			change := map[string]bool{}
			for _, f := range offloadFeatures {
				if on, ok := feats[f]; ok && on {
					change[f] = false
				}
			}
			if len(change) > 0 {
				if err := e.Change(l, change); err != nil {
					return fmt.Errorf("ethtool -K %s %s: %w", l, featureList(change), err)
				}
			}
			feats, err = e.Features(l)
			if err != nil {
				return fmt.Errorf("ethtool features of %s: %w", l, err)
			}
			for _, f := range mustBeOff {
				if feats[f] {
					return fmt.Errorf("ethtool: %s still on for %s after switching it off", f, l)
				}
			}
		}
		return nil
	})
}

func featureList(m map[string]bool) string {
	var s []string
	for k := range m {
		s = append(s, k+" off")
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
