package mutate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/finproxy/finproxy/segment"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// OptionKind is a TCP option kind (RFC 9293 and the registry).
type OptionKind uint8

// TCP option kinds.
const (
	OptEnd           OptionKind = 0
	OptNop           OptionKind = 1
	OptMSS           OptionKind = 2
	OptWindowScale   OptionKind = 3
	OptSACKPermitted OptionKind = 4
	OptSACK          OptionKind = 5
	OptTimestamps    OptionKind = 8
)

// ErrTruncated is returned (wrapped) by Parse for a packet shorter than its IP header says:
// part of it is missing, and giving it back would lose that part.
var ErrTruncated = errors.New("truncated packet")

// ErrUnsupported is returned (wrapped) by Parse for a TCP segment it cannot give back
// whole once changed: one behind IPv6 extension headers, or with malformed TCP options
// (Linux reads such a segment, and the rules see it, but Bytes would have to drop or
// repair what it cannot parse).
var ErrUnsupported = errors.New("cannot be rewritten")

// maxTCPHeader is the longest TCP header (data offset 15).
const maxTCPHeader = 60

// Segment is a TCP segment over IPv4 or IPv6, decoded for editing. The zero value is not
// usable: get one from Parse or Spec.Segment. A Segment owns its bytes (Parse copies its
// input). It is not safe for concurrent use.
type Segment struct {
	v6      bool
	ip4     layers.IPv4
	ip6     layers.IPv6
	tcp     layers.TCP
	payload []byte
}

// Parse decodes the IP packet b (starting at the IP header, as NFQUEUE delivers it) into a
// Segment. b is copied: the caller may reuse it. Bytes after the IP packet's length (link
// padding) are ignored. It fails for anything but a whole, unfragmented TCP segment
// directly over IPv4 or IPv6, with well-formed options: fragments wrap
// segment.ErrFragment, other protocols segment.ErrNotTCP, extension headers and malformed
// options ErrUnsupported, short packets ErrTruncated.
func Parse(b []byte) (*Segment, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("mutate: empty packet: %w", segment.ErrNotTCP)
	}
	var (
		total int
		first gopacket.LayerType
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return nil, fmt.Errorf("mutate: IPv4 header of %d bytes: %w", len(b), ErrTruncated)
		}
		total = int(binary.BigEndian.Uint16(b[2:4]))
		if ihl := int(b[0]&0x0f) * 4; ihl < 20 || total < ihl {
			return nil, fmt.Errorf("mutate: IPv4 header length %d, total length %d: malformed", ihl, total)
		}
		if ff := binary.BigEndian.Uint16(b[6:8]); ff&0x3fff != 0 {
			return nil, fmt.Errorf("mutate: IPv4 fragment: %w", segment.ErrFragment)
		}
		if b[9] != byte(layers.IPProtocolTCP) {
			return nil, fmt.Errorf("mutate: IPv4 protocol %d: %w", b[9], segment.ErrNotTCP)
		}
		first = layers.LayerTypeIPv4
	case 6:
		if len(b) < 40 {
			return nil, fmt.Errorf("mutate: IPv6 header of %d bytes: %w", len(b), ErrTruncated)
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if plen == 0 {
			return nil, fmt.Errorf("mutate: IPv6 payload length 0 (jumbogram or empty): not supported")
		}
		switch b[6] {
		case byte(layers.IPProtocolTCP):
		case 0, 43, 44, 51, 60: // Hop-by-Hop, Routing, Fragment, AH, Destination Options
			return nil, fmt.Errorf("mutate: IPv6 extension header %d before TCP: a segment behind one %w", b[6], ErrUnsupported)
		default:
			return nil, fmt.Errorf("mutate: IPv6 next header %d: %w", b[6], segment.ErrNotTCP)
		}
		total = 40 + plen
		first = layers.LayerTypeIPv6
	default:
		return nil, fmt.Errorf("mutate: IP version %d: %w", b[0]>>4, segment.ErrNotTCP)
	}
	if total > len(b) {
		return nil, fmt.Errorf("mutate: IP length %d, %d bytes present: %w", total, len(b), ErrTruncated)
	}
	buf := slices.Clone(b[:total])
	s := &Segment{v6: first == layers.LayerTypeIPv6}
	var p *gopacket.DecodingLayerParser
	if s.v6 {
		p = gopacket.NewDecodingLayerParser(first, &s.ip6, &s.tcp)
	} else {
		p = gopacket.NewDecodingLayerParser(first, &s.ip4, &s.tcp)
	}
	p.IgnoreUnsupported = true // the payload after TCP
	decoded := make([]gopacket.LayerType, 0, 2)
	if err := p.DecodeLayers(buf, &decoded); err != nil {
		if len(decoded) == 1 && len(s.tcp.Contents) >= 20 && s.tcp.DataOffset >= 5 && len(s.tcp.Contents) == int(s.tcp.DataOffset)*4 {
			// The fixed header was read and the data offset fits: the options failed.
			return nil, fmt.Errorf("mutate: malformed TCP options (%v): a segment with them %w", err, ErrUnsupported)
		}
		return nil, fmt.Errorf("mutate: decode: %w", err)
	}
	if len(decoded) != 2 || decoded[1] != layers.LayerTypeTCP {
		return nil, fmt.Errorf("mutate: no TCP header: %w", segment.ErrNotTCP)
	}
	s.payload = s.tcp.Payload
	s.tcp.Padding = nil
	return s, nil
}

// IsIPv6 reports whether the segment is carried over IPv6.
func (s *Segment) IsIPv6() bool { return s.v6 }

// Src and Dst are the segment's endpoints.
func (s *Segment) Src() netip.AddrPort {
	return netip.AddrPortFrom(s.addr(true), uint16(s.tcp.SrcPort))
}

// Dst is the segment's destination endpoint.
func (s *Segment) Dst() netip.AddrPort {
	return netip.AddrPortFrom(s.addr(false), uint16(s.tcp.DstPort))
}

func (s *Segment) addr(src bool) netip.Addr {
	var ip net.IP
	switch {
	case s.v6 && src:
		ip = s.ip6.SrcIP.To16()
	case s.v6:
		ip = s.ip6.DstIP.To16()
	case src:
		ip = s.ip4.SrcIP.To4()
	default:
		ip = s.ip4.DstIP.To4()
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

// Flags are the segment's control bits.
func (s *Segment) Flags() segment.Flags {
	t := &s.tcp
	var f segment.Flags
	for _, b := range []struct {
		set  bool
		flag segment.Flags
	}{{t.FIN, segment.FIN}, {t.SYN, segment.SYN}, {t.RST, segment.RST}, {t.PSH, segment.PSH},
		{t.ACK, segment.ACK}, {t.URG, segment.URG}, {t.ECE, segment.ECE}, {t.CWR, segment.CWR}} {
		if b.set {
			f |= b.flag
		}
	}
	return f
}

// Seq, Ack and Window are the header's fields.
func (s *Segment) Seq() uint32 { return s.tcp.Seq }

// Ack is the acknowledgment number.
func (s *Segment) Ack() uint32 { return s.tcp.Ack }

// Window is the (unscaled) window field.
func (s *Segment) Window() uint16 { return s.tcp.Window }

// Payload is the segment's data (not a copy).
func (s *Segment) Payload() []byte { return s.payload }

// Info is the segment as package segment describes it.
func (s *Segment) Info() segment.Segment {
	return segment.Segment{Src: s.Src(), Dst: s.Dst(), Seq: s.tcp.Seq, Ack: s.tcp.Ack,
		Flags: s.Flags(), Window: s.tcp.Window, PayloadLen: len(s.payload)}
}

// String renders the segment as segment.Segment.String does.
func (s *Segment) String() string {
	i := s.Info()
	return i.String()
}

// SetFlags sets the bits of f (the others stay as they are).
func (s *Segment) SetFlags(f segment.Flags) { s.putFlags(s.Flags() | f) }

// ClearFlags clears the bits of f.
func (s *Segment) ClearFlags(f segment.Flags) { s.putFlags(s.Flags() &^ f) }

func (s *Segment) putFlags(f segment.Flags) {
	t := &s.tcp
	t.FIN, t.SYN, t.RST, t.PSH = f&segment.FIN != 0, f&segment.SYN != 0, f&segment.RST != 0, f&segment.PSH != 0
	t.ACK, t.URG, t.ECE, t.CWR = f&segment.ACK != 0, f&segment.URG != 0, f&segment.ECE != 0, f&segment.CWR != 0
}

// SetSeq sets the sequence number.
func (s *Segment) SetSeq(seq uint32) { s.tcp.Seq = seq }

// MoveSeq adds delta to the sequence number (modulo 2^32).
func (s *Segment) MoveSeq(delta int32) { s.tcp.Seq += uint32(delta) }

// SetAck sets the acknowledgment number (the ACK flag is left as it is).
func (s *Segment) SetAck(ack uint32) { s.tcp.Ack = ack }

// MoveAck adds delta to the acknowledgment number (modulo 2^32).
func (s *Segment) MoveAck(delta int32) { s.tcp.Ack += uint32(delta) }

// SetWindow sets the window field (as sent: the receiver scales it by the window scale
// agreed in the handshake, if any).
func (s *Segment) SetWindow(w uint16) { s.tcp.Window = w }

// SetSrcPort sets the source port; SetDstPort the destination port. Rewriting a client's
// port is one of them, on every segment of the connection in both directions.
func (s *Segment) SetSrcPort(p uint16) { s.tcp.SrcPort = layers.TCPPort(p) }

// SetDstPort sets the destination port.
func (s *Segment) SetDstPort(p uint16) { s.tcp.DstPort = layers.TCPPort(p) }

// SetPayload replaces the data (the slice is kept, not copied).
func (s *Segment) SetPayload(p []byte) { s.payload = p }

// Options lists the kinds of the TCP options present, in order (NOP and EOL included).
func (s *Segment) Options() []OptionKind {
	out := make([]OptionKind, len(s.tcp.Options))
	for i, o := range s.tcp.Options {
		out[i] = OptionKind(o.OptionType)
	}
	return out
}

// StripOptions removes the TCP options of the given kinds; with no kinds, every option
// (NOP and EOL included). NOP padding between the options left is kept; the header is
// padded to a multiple of 4 bytes when serialized.
func (s *Segment) StripOptions(kinds ...OptionKind) {
	s.tcp.Options = slices.DeleteFunc(s.tcp.Options, func(o layers.TCPOption) bool {
		return len(kinds) == 0 || slices.Contains(kinds, OptionKind(o.OptionType))
	})
}

// KeepOptions removes every TCP option but those of the given kinds (NOP and EOL too,
// unless listed).
func (s *Segment) KeepOptions(kinds ...OptionKind) {
	s.tcp.Options = slices.DeleteFunc(s.tcp.Options, func(o layers.TCPOption) bool {
		return !slices.Contains(kinds, OptionKind(o.OptionType))
	})
}

// StripTimestamps removes the timestamps option (RFC 7323): the receiver then cannot
// apply PAWS to the segment.
func (s *Segment) StripTimestamps() { s.StripOptions(OptTimestamps) }

// Timestamps returns the timestamps option's values (ok false when there is none).
func (s *Segment) Timestamps() (val, ecr uint32, ok bool) {
	for _, o := range s.tcp.Options {
		if OptionKind(o.OptionType) == OptTimestamps && len(o.OptionData) == 8 {
			return binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:]), true
		}
	}
	return 0, 0, false
}

// SetTimestamps sets the timestamps option's values, adding the option (after two NOPs,
// as Linux aligns it) when there is none. It fails when the header has no room left.
func (s *Segment) SetTimestamps(val, ecr uint32) error {
	data := make([]byte, 8)
	binary.BigEndian.PutUint32(data, val)
	binary.BigEndian.PutUint32(data[4:], ecr)
	for i, o := range s.tcp.Options {
		if OptionKind(o.OptionType) == OptTimestamps {
			s.tcp.Options[i].OptionData = data
			s.tcp.Options[i].OptionLength = 10
			return nil
		}
	}
	// Added after the options there are, but before an end-of-list, which ends them.
	opts := slices.DeleteFunc(slices.Clone(s.tcp.Options), func(o layers.TCPOption) bool {
		return o.OptionType == layers.TCPOptionKindEndList
	})
	opts = append(opts,
		layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
		layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
		layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: data})
	if 20+optionBytes(opts) > maxTCPHeader {
		return fmt.Errorf("mutate: no room for the timestamps option (%d option bytes already)", optionBytes(s.tcp.Options))
	}
	s.tcp.Options = opts
	return nil
}

// Append appends the payload of next, the segment that follows s in the same direction of
// the same connection (next.Seq must be s.Seq + len(s.Payload)), as if the sender had
// sent both in one segment: the result carries next's FIN and PSH bits, and, when next
// carries an ACK, its acknowledgment number, window and timestamps (the newest the sender
// had). Merging a last data segment and the bare FIN after it is s.Append(fin).
func (s *Segment) Append(next *Segment) error {
	if s.Src() != next.Src() || s.Dst() != next.Dst() {
		return fmt.Errorf("mutate: append %s to %s: not the same direction of one connection", next.Src(), s.Src())
	}
	if s.Flags()&(segment.FIN|segment.RST) != 0 {
		return fmt.Errorf("mutate: append to a segment with %s: nothing may follow it", s.Flags()&(segment.FIN|segment.RST))
	}
	if next.Flags()&(segment.SYN|segment.RST) != 0 {
		return fmt.Errorf("mutate: append a segment with %s", next.Flags()&(segment.SYN|segment.RST))
	}
	if want := s.tcp.Seq + uint32(len(s.payload)); next.tcp.Seq != want {
		return fmt.Errorf("mutate: append seq %d: not contiguous (want %d)", next.tcp.Seq, want)
	}
	p := make([]byte, 0, len(s.payload)+len(next.payload))
	s.payload = append(append(p, s.payload...), next.payload...)
	s.SetFlags(next.Flags() & (segment.FIN | segment.PSH))
	if next.tcp.ACK {
		s.tcp.ACK = true
		s.tcp.Ack = next.tcp.Ack
		s.tcp.Window = next.tcp.Window
		if val, ecr, ok := next.Timestamps(); ok {
			if _, _, have := s.Timestamps(); have {
				return s.SetTimestamps(val, ecr)
			}
		}
	}
	return nil
}

// optionBytes is the length of the options as serialized, before padding.
func optionBytes(opts []layers.TCPOption) int {
	n := 0
	for _, o := range opts {
		switch o.OptionType {
		case layers.TCPOptionKindEndList, layers.TCPOptionKindNop:
			n++
		default:
			n += 2 + len(o.OptionData)
		}
	}
	return n
}

// Bytes serializes the segment: lengths and checksums (IPv4 header, TCP over the IPv4 or
// IPv6 pseudo-header) are computed by gopacket, then checked independently (Check). The
// IPv4 identification, TTL or hop limit, and TOS or traffic class are kept.
func (s *Segment) Bytes() ([]byte, error) {
	t := &s.tcp
	t.Padding = nil
	if hl := 20 + (optionBytes(t.Options)+3)/4*4; hl > maxTCPHeader {
		return nil, fmt.Errorf("mutate: TCP header of %d bytes (at most %d)", hl, maxTCPHeader)
	}
	for i, o := range t.Options {
		if o.OptionType > layers.TCPOptionKindNop && len(o.OptionData) > 253 {
			return nil, fmt.Errorf("mutate: TCP option %d of %d bytes", o.OptionType, len(o.OptionData))
		}
		if o.OptionType == layers.TCPOptionKindEndList && i != len(t.Options)-1 {
			return nil, fmt.Errorf("mutate: TCP option %d after the end-of-list option", t.Options[i+1].OptionType)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var ipLayer gopacket.SerializableLayer
	if s.v6 {
		if n := 20 + optionBytes(t.Options) + 3 + len(s.payload); n > 0xffff {
			return nil, fmt.Errorf("mutate: IPv6 payload of %d bytes (at most 65535)", n)
		}
		if err := t.SetNetworkLayerForChecksum(&s.ip6); err != nil {
			return nil, err
		}
		s.ip6.HopByHop = nil
		s.ip6.NextHeader = layers.IPProtocolTCP
		ipLayer = &s.ip6
	} else {
		ipLen := 20
		for _, o := range s.ip4.Options {
			if o.OptionType <= 1 {
				ipLen++
			} else {
				ipLen += int(o.OptionLength)
			}
		}
		if n := (ipLen+3)/4*4 + 20 + optionBytes(t.Options) + 3 + len(s.payload); n > 0xffff {
			return nil, fmt.Errorf("mutate: IPv4 packet of %d bytes (at most 65535)", n)
		}
		if err := t.SetNetworkLayerForChecksum(&s.ip4); err != nil {
			return nil, err
		}
		s.ip4.Protocol = layers.IPProtocolTCP
		ipLayer = &s.ip4
	}
	if err := gopacket.SerializeLayers(buf, opts, ipLayer, t, gopacket.Payload(s.payload)); err != nil {
		return nil, fmt.Errorf("mutate: serialize: %w", err)
	}
	out := buf.Bytes()
	if err := Check(out); err != nil {
		return nil, fmt.Errorf("mutate: the serialized segment fails its check: %w", err)
	}
	return out, nil
}
