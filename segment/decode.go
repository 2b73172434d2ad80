package segment

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// ErrNotTCP is returned for a packet that is not a TCP segment over IPv4 or IPv6.
var ErrNotTCP = errors.New("not a TCP segment")

// Decoder decodes raw IP packets (as NFQUEUE delivers them, starting at the IP header).
// A Decoder is not safe for concurrent use; it does not allocate per call.
type Decoder struct {
	ip4     layers.IPv4
	ip6     layers.IPv6
	tcp     layers.TCP
	p4, p6  *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

// NewDecoder returns a Decoder ready for use.
func NewDecoder() *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 4)}
	d.p4 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &d.ip4, &d.tcp)
	d.p6 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, &d.ip6, &d.tcp)
	d.p4.IgnoreUnsupported = true
	d.p6.IgnoreUnsupported = true
	return d
}

// Decode fills s from the IP packet b. It returns ErrNotTCP (wrapped) for anything but a
// TCP segment, and a descriptive error for a truncated or malformed packet.
func (d *Decoder) Decode(b []byte, s *Segment) error {
	if len(b) == 0 {
		return fmt.Errorf("empty packet: %w", ErrNotTCP)
	}
	var p *gopacket.DecodingLayerParser
	switch b[0] >> 4 {
	case 4:
		p = d.p4
	case 6:
		p = d.p6
	default:
		return fmt.Errorf("IP version %d: %w", b[0]>>4, ErrNotTCP)
	}
	d.decoded = d.decoded[:0]
	if err := p.DecodeLayers(b, &d.decoded); err != nil {
		return fmt.Errorf("decode segment: %w", err)
	}
	var src, dst netip.Addr
	gotIP, gotTCP := false, false
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeIPv4:
			if d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0 {
				return fmt.Errorf("IPv4 fragment: %w", ErrNotTCP)
			}
			src, _ = netip.AddrFromSlice(d.ip4.SrcIP.To4())
			dst, _ = netip.AddrFromSlice(d.ip4.DstIP.To4())
			gotIP = true
		case layers.LayerTypeIPv6:
			src, _ = netip.AddrFromSlice(d.ip6.SrcIP.To16())
			dst, _ = netip.AddrFromSlice(d.ip6.DstIP.To16())
			gotIP = true
		case layers.LayerTypeTCP:
			gotTCP = true
		}
	}
	if !gotIP || !gotTCP {
		return fmt.Errorf("no TCP header: %w", ErrNotTCP)
	}
	t := &d.tcp
	s.Src = netip.AddrPortFrom(src, uint16(t.SrcPort))
	s.Dst = netip.AddrPortFrom(dst, uint16(t.DstPort))
	s.Seq, s.Ack, s.Window = t.Seq, t.Ack, t.Window
	s.PayloadLen = len(t.Payload)
	var f Flags
	if t.FIN {
		f |= FIN
	}
	if t.SYN {
		f |= SYN
	}
	if t.RST {
		f |= RST
	}
	if t.PSH {
		f |= PSH
	}
	if t.ACK {
		f |= ACK
	}
	if t.URG {
		f |= URG
	}
	if t.ECE {
		f |= ECE
	}
	if t.CWR {
		f |= CWR
	}
	s.Flags = f
	return nil
}
