package mutate

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/finproxy/finproxy/segment"
	"github.com/google/gopacket/layers"
)

// Spec describes a segment to craft.
type Spec struct {
	// Src and Dst are the endpoints; both IPv4 or both IPv6 (IPv4-mapped IPv6 addresses
	// count as IPv4).
	Src, Dst netip.AddrPort
	Flags    segment.Flags
	Seq, Ack uint32
	Window   uint16
	// TTL is the IPv4 TTL or IPv6 hop limit (0: 64).
	TTL uint8
	// Payload is the data (kept, not copied).
	Payload []byte
}

// DefaultTTL is a crafted segment's TTL or hop limit when Spec.TTL is 0.
const DefaultTTL = 64

// Segment returns the segment sp describes, for further changes before Bytes.
func (sp Spec) Segment() (*Segment, error) {
	src, dst := sp.Src.Addr().Unmap(), sp.Dst.Addr().Unmap()
	if !src.IsValid() || !dst.IsValid() {
		return nil, fmt.Errorf("mutate: build: invalid address (%v > %v)", sp.Src, sp.Dst)
	}
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("mutate: build: %v and %v are not of one family", src, dst)
	}
	ttl := sp.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	s := &Segment{v6: !src.Is4(), payload: sp.Payload}
	s.tcp = layers.TCP{SrcPort: layers.TCPPort(sp.Src.Port()), DstPort: layers.TCPPort(sp.Dst.Port()),
		Seq: sp.Seq, Ack: sp.Ack, Window: sp.Window}
	s.putFlags(sp.Flags)
	if s.v6 {
		s.ip6 = layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
	} else {
		s.ip4 = layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
	}
	return s, nil
}

// Build crafts the segment sp describes: an IP packet with correct lengths and checksums.
func Build(sp Spec) ([]byte, error) {
	s, err := sp.Segment()
	if err != nil {
		return nil, err
	}
	return s.Bytes()
}

// Reset crafts a RST|ACK from one endpoint to the other, window 0, no options. A receiver
// in ESTABLISHED or later accepts it as a reset only when seq is exactly the next sequence
// number it expects (RFC 5961: a seq elsewhere in the window draws a challenge ACK
// instead); in SYN_SENT only when ack acknowledges its SYN.
func Reset(from, to netip.AddrPort, seq, ack uint32) ([]byte, error) {
	return Build(Spec{Src: from, Dst: to, Flags: segment.RST | segment.ACK, Seq: seq, Ack: ack})
}
