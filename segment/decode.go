package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Why a packet could not be decoded into a Segment; Decode wraps exactly one of them.
var (
	// ErrNotTCP: a whole packet that is not a TCP segment over IPv4 or IPv6 (another
	// protocol, an IPv6 "no next header", a header chain ending in ESP that hides
	// what it carries).
	ErrNotTCP = errors.New("not a TCP segment")
	// ErrFragment: an IPv4 or IPv6 fragment. Its flags are unknown until the whole
	// datagram is reassembled (a later fragment has no TCP header at all).
	ErrFragment = errors.New("IP fragment")
	// ErrMalformed: headers that contradict each other or the packet's length (a
	// receiver's kernel drops such a packet too).
	ErrMalformed = errors.New("malformed packet")
)

// IP protocol and IPv6 next-header numbers the decoder knows.
const (
	protoHopByHop = 0
	protoTCP      = 6
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoNoNext   = 59
	protoDestOpts = 60
)

// Decoder decodes raw IP packets (as NFQUEUE delivers them, starting at the IP header).
//
// It reads the headers the way the kernel does rather than through gopacket's layers, so
// that nothing the receiving kernel would act on stays hidden from the rules: IPv6
// extension headers (Hop-by-Hop, Routing, Destination Options, Authentication, and a
// fragment header that says the packet is whole) are walked to the TCP header, as
// ip6tables' "-p tcp" and the receiver do; TCP options are not parsed at all, so
// malformed ones (a length of 0 or 1, a SACK longer than the header) cannot hide the
// flags (Linux stops reading options at such a one and processes the segment).
// A Decoder is not safe for concurrent use; it does not allocate per call on success.
type Decoder struct{}

// NewDecoder returns a Decoder ready for use.
func NewDecoder() *Decoder { return &Decoder{} }

// Decode fills s from the IP packet b. It returns an error wrapping ErrNotTCP,
// ErrFragment or ErrMalformed when b is not a whole TCP segment it can read.
//
// A packet shorter than its IP header says (a queue's copy range cut it) decodes from
// what is there when its TCP header is whole; PayloadLen then counts the bytes present.
// A length field of 0 (a BIG TCP GSO packet) also means "as long as what is there".
func (d *Decoder) Decode(b []byte, s *Segment) error {
	if len(b) == 0 {
		return fmt.Errorf("empty packet: %w", ErrMalformed)
	}
	var (
		src, dst netip.Addr
		tcp      []byte
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return fmt.Errorf("IPv4 header of %d bytes: %w", len(b), ErrMalformed)
		}
		ihl := int(b[0]&0x0f) * 4
		end := int(binary.BigEndian.Uint16(b[2:4]))
		if end == 0 {
			end = len(b)
		}
		if ihl < 20 || end < ihl || ihl > len(b) {
			return fmt.Errorf("IPv4 header length %d, total length %d, %d bytes: %w", ihl, end, len(b), ErrMalformed)
		}
		if ff := binary.BigEndian.Uint16(b[6:8]); ff&0x3fff != 0 {
			return fmt.Errorf("IPv4 fragment at offset %d (more fragments: %t): %w", ff&0x1fff*8, ff&0x2000 != 0, ErrFragment)
		}
		if b[9] != protoTCP {
			return fmt.Errorf("IPv4 protocol %d: %w", b[9], ErrNotTCP)
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		tcp = b[ihl:min(end, len(b))]
	case 6:
		if len(b) < 40 {
			return fmt.Errorf("IPv6 header of %d bytes: %w", len(b), ErrMalformed)
		}
		end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if end == 40 {
			end = len(b)
		}
		end = min(end, len(b))
		next, off, err := walkIPv6(b[:end], b[6])
		if err != nil {
			return err
		}
		if next != protoTCP {
			return fmt.Errorf("IPv6 next header %d: %w", next, ErrNotTCP)
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		tcp = b[off:end]
	default:
		return fmt.Errorf("IP version %d: %w", b[0]>>4, ErrMalformed)
	}
	if len(tcp) < 20 {
		return fmt.Errorf("TCP header of %d bytes: %w", len(tcp), ErrMalformed)
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return fmt.Errorf("TCP data offset %d in %d bytes: %w", doff, len(tcp), ErrMalformed)
	}
	s.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2]))
	s.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4]))
	s.Seq = binary.BigEndian.Uint32(tcp[4:8])
	s.Ack = binary.BigEndian.Uint32(tcp[8:12])
	s.Flags = Flags(tcp[13]) // FIN is bit 0 on the wire as in Flags, CWR bit 7
	s.Window = binary.BigEndian.Uint16(tcp[14:16])
	s.PayloadLen = len(tcp) - doff
	return nil
}

// walkIPv6 follows the IPv6 header chain of b (a packet cut at its payload length) from
// the first next header, as the kernel's ipv6_find_hdr does, and returns the upper-layer
// protocol with its offset in b.
func walkIPv6(b []byte, next byte) (proto byte, off int, err error) {
	off = 40
	for {
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts, protoAH:
			if off+2 > len(b) {
				return 0, 0, fmt.Errorf("IPv6 extension header %d cut at offset %d: %w", next, off, ErrMalformed)
			}
			n := (int(b[off+1]) + 1) * 8
			if next == protoAH {
				n = (int(b[off+1]) + 2) * 4
			}
			if off+n > len(b) {
				return 0, 0, fmt.Errorf("IPv6 extension header %d of %d bytes at offset %d beyond the packet (%d bytes): %w", next, n, off, len(b), ErrMalformed)
			}
			next, off = b[off], off+n
		case protoFragment:
			if off+8 > len(b) {
				return 0, 0, fmt.Errorf("IPv6 fragment header cut at offset %d: %w", off, ErrMalformed)
			}
			// Offset 0 and no more fragments: an atomic fragment (RFC 6946), a whole
			// packet that merely carries the header.
			if fo := binary.BigEndian.Uint16(b[off+2 : off+4]); fo&0xfff9 != 0 {
				return 0, 0, fmt.Errorf("IPv6 fragment at offset %d (more fragments: %t): %w", fo&^7, fo&1 != 0, ErrFragment)
			}
			next, off = b[off], off+8
		case protoNoNext:
			return 0, 0, fmt.Errorf("IPv6 no next header: %w", ErrNotTCP)
		default:
			return next, off, nil
		}
	}
}
