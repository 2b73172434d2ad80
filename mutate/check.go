package mutate

import (
	"encoding/binary"
	"fmt"
)

// Check verifies, without gopacket, that b is a whole TCP segment over IPv4 or IPv6 as a
// kernel accepts it: the IP version, header and total lengths agree with len(b), the IPv4
// header checksum and the TCP checksum (over the pseudo-header) are right, the TCP data
// offset fits. It is the independent check of what Bytes and Build produce.
func Check(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("empty packet")
	}
	var tcp []byte
	var pseudo uint32
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return fmt.Errorf("IPv4: %d bytes, shorter than a header", len(b))
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || ihl > len(b) {
			return fmt.Errorf("IPv4: header length %d for %d bytes", ihl, len(b))
		}
		if total := int(binary.BigEndian.Uint16(b[2:4])); total != len(b) {
			return fmt.Errorf("IPv4: total length %d, packet of %d bytes", total, len(b))
		}
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
			return fmt.Errorf("IPv4: a fragment")
		}
		if b[9] != 6 {
			return fmt.Errorf("IPv4: protocol %d, not TCP", b[9])
		}
		if s := fold(sum(0, b[:ihl])); s != 0xffff {
			return fmt.Errorf("IPv4: header checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(b[10:12]), s)
		}
		tcp = b[ihl:]
		pseudo = sum(0, b[12:20]) + 6 + uint32(len(tcp))
	case 6:
		if len(b) < 40 {
			return fmt.Errorf("IPv6: %d bytes, shorter than a header", len(b))
		}
		if plen := int(binary.BigEndian.Uint16(b[4:6])); plen+40 != len(b) {
			return fmt.Errorf("IPv6: payload length %d, packet of %d bytes", plen, len(b))
		}
		if b[6] != 6 {
			return fmt.Errorf("IPv6: next header %d, not TCP", b[6])
		}
		tcp = b[40:]
		pseudo = sum(0, b[8:40]) + 6 + uint32(len(tcp))
	default:
		return fmt.Errorf("IP version %d", b[0]>>4)
	}
	if len(tcp) < 20 {
		return fmt.Errorf("TCP: %d bytes, shorter than a header", len(tcp))
	}
	if off := int(tcp[12]>>4) * 4; off < 20 || off > len(tcp) {
		return fmt.Errorf("TCP: data offset %d for %d bytes", off, len(tcp))
	}
	if s := fold(sum(pseudo, tcp)); s != 0xffff {
		return fmt.Errorf("TCP: checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(tcp[16:18]), s)
	}
	return nil
}

// sum adds b to the one's complement sum acc as 16-bit big-endian words (an odd last byte
// padded with zero).
func sum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}
