package segment

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// build serializes a TCP segment over IPv4 or IPv6 with gopacket, as a kernel would send it.
func build(t testing.TB, src, dst netip.AddrPort, flags Flags, seq, ack uint32, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, Window: 502,
		FIN: flags&FIN != 0, SYN: flags&SYN != 0, RST: flags&RST != 0, PSH: flags&PSH != 0,
		ACK: flags&ACK != 0, URG: flags&URG != 0, ECE: flags&ECE != 0, CWR: flags&CWR != 0}
	var ip gopacket.SerializableLayer
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		_ = tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		_ = tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var (
	c4 = netip.MustParseAddrPort("198.18.1.2:40000")
	s4 = netip.MustParseAddrPort("198.18.2.2:8080")
	c6 = netip.MustParseAddrPort("[fd00:f1:1::2]:40000")
	s6 = netip.MustParseAddrPort("[fd00:f1:2::2]:8080")
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		flags    Flags
		seq, ack uint32
		payload  string
	}{
		{"v4 SYN", c4, s4, SYN, 1000, 0, ""},
		{"v4 SYN|ACK", s4, c4, SYN | ACK, 5000, 1001, ""},
		{"v4 data", c4, s4, PSH | ACK, 1001, 5001, "hello"},
		{"v4 FIN with data", c4, s4, FIN | PSH | ACK, 1006, 5001, "bye"},
		{"v4 RST", s4, c4, RST, 5001, 0, ""},
		{"v4 all flags", c4, s4, FIN | SYN | RST | PSH | ACK | URG | ECE | CWR, 0xffffffff, 0xfffffffe, ""},
		{"v6 SYN", c6, s6, SYN, 7, 0, ""},
		{"v6 FIN|ACK", s6, c6, FIN | ACK, 9, 8, ""},
		{"v6 data", c6, s6, ACK, 8, 10, strings.Repeat("x", 1400)},
	}
	d := NewDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := build(t, tc.src, tc.dst, tc.flags, tc.seq, tc.ack, []byte(tc.payload))
			var s Segment
			if err := d.Decode(b, &s); err != nil {
				t.Fatal(err)
			}
			want := Segment{Src: tc.src, Dst: tc.dst, Seq: tc.seq, Ack: tc.ack, Flags: tc.flags, Window: 502, PayloadLen: len(tc.payload)}
			if s != want {
				t.Errorf("got  %+v\nwant %+v", s, want)
			}
		})
	}
}

// Golden: real segments recorded as hex (one per line: "name hex"), decoded to String().
func TestDecodeGolden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "segments.txt"))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder()
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, " | ", 3)
		if len(parts) != 3 {
			t.Fatalf("bad fixture line %q", line)
		}
		b, err := hex.DecodeString(strings.TrimSpace(parts[1]))
		if err != nil {
			t.Fatal(err)
		}
		var s Segment
		got := ""
		if err := d.Decode(b, &s); err != nil {
			got = "error: " + err.Error()
		} else {
			got = s.String()
		}
		if want := strings.TrimSpace(parts[2]); got != want {
			t.Errorf("%s:\n got  %s\n want %s", parts[0], got, want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := build(t, c4, s4, SYN, 1, 0, nil)
	udp := append([]byte(nil), good...)
	udp[9] = 17 // protocol UDP
	frag := append([]byte(nil), good...)
	frag[6] |= 0x20 // more fragments
	later := append([]byte(nil), good...)
	later[7] = 3 // fragment offset 24
	badOff := append([]byte(nil), good...)
	badOff[20+12] = 4 << 4 // TCP data offset 16 bytes
	longOff := append([]byte(nil), good...)
	longOff[20+12] = 15 << 4 // 60 bytes, more than the segment
	v6 := build(t, c6, s6, FIN|ACK, 1, 2, nil)
	noNext := append([]byte(nil), v6...)
	noNext[6] = 59
	esp := append([]byte(nil), v6...)
	esp[6] = 50
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version 5", []byte{0x50, 0, 0, 0}, ErrMalformed},
		{"truncated IPv4 header", good[:10], ErrMalformed},
		{"truncated TCP header", good[:30], ErrMalformed},
		{"IPv4 header length 16", append([]byte{0x44}, good[1:]...), ErrMalformed},
		{"TCP data offset 4", badOff, ErrMalformed},
		{"TCP data offset beyond the packet", longOff, ErrMalformed},
		{"UDP", udp, ErrNotTCP},
		{"IPv6 no next header", noNext, ErrNotTCP},
		{"IPv6 ESP", esp, ErrNotTCP},
		{"IPv4 first fragment", frag, ErrFragment},
		{"IPv4 later fragment", later, ErrFragment},
	}
	d := NewDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Segment
			err := d.Decode(tc.b, &s)
			if err == nil {
				t.Fatalf("no error for %x", tc.b)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v does not wrap %v", err, tc.want)
			}
		})
	}
}

// Crafted packets that once hid their FIN from the rules (issue 15): extension headers
// before TCP, malformed TCP options, fragments. Each must decode to its segment (the
// flags above all), or, for a fragment, be an ErrFragment: never "not TCP".

// withOptions rebuilds the TCP segment of an IPv4 or IPv6 packet p (no extension
// headers) with the raw option bytes opts (a multiple of 4) and a correct checksum.
func withOptions(t *testing.T, p []byte, opts []byte) []byte {
	t.Helper()
	ihl := 40
	if p[0]>>4 == 4 {
		ihl = int(p[0]&0x0f) * 4
	}
	tcp := append(append(append([]byte(nil), p[ihl:ihl+20]...), opts...), p[ihl+20:]...)
	tcp[12] = byte((20+len(opts))/4) << 4
	out := append(append([]byte(nil), p[:ihl]...), tcp...)
	if ihl == 20 {
		binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	} else {
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	}
	return out
}

// withExtHeaders inserts IPv6 extension headers (each with its next-header byte to be
// set) between the IPv6 header of p and its TCP segment.
func withExtHeaders(p []byte, kinds []byte, headers ...[]byte) []byte {
	out := append([]byte(nil), p[:40]...)
	next := p[6]
	out[6] = kinds[0]
	for i, h := range headers {
		h = append([]byte(nil), h...)
		if i+1 < len(headers) {
			h[0] = kinds[i+1]
		} else {
			h[0] = next
		}
		out = append(out, h...)
	}
	out = append(out, p[40:]...)
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

func TestDecodeHiddenFIN(t *testing.T) {
	v4 := build(t, c4, s4, FIN|ACK, 1006, 5001, []byte("bye"))
	v6 := build(t, c6, s6, FIN|ACK, 1006, 5001, []byte("bye"))
	pad8 := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header, length 0 (8 bytes), PadN of 4
	pad16 := []byte{0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	routing := []byte{0, 0, 4, 0, 0, 0, 0, 0}                                            // type 4 (segment routing), 0 segments left
	ah := []byte{0, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // (4+2)*4 bytes
	atomic := []byte{0, 0, 0, 0, 0, 0, 0, 7}                                             // offset 0, no more fragments
	tests := []struct {
		name string
		b    []byte
		v6   bool
	}{
		{"hop-by-hop", withExtHeaders(v6, []byte{0}, pad8), true},
		{"destination options", withExtHeaders(v6, []byte{60}, pad8), true},
		{"hop-by-hop of 16 bytes", withExtHeaders(v6, []byte{0}, pad16), true},
		{"hop-by-hop, routing, destination options", withExtHeaders(v6, []byte{0, 43, 60}, pad8, routing, pad16), true},
		{"authentication header", withExtHeaders(v6, []byte{51}, ah), true},
		{"atomic fragment", withExtHeaders(v6, []byte{44}, atomic), true},
		{"tcp option length 0", withOptions(t, v4, []byte{8, 0, 0, 0}), false},
		{"tcp option length 1", withOptions(t, v4, []byte{1, 1, 3, 1}), false},
		{"tcp over-long sack", withOptions(t, v4, []byte{1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2}), false},
		{"tcp option cut at the end", withOptions(t, v4, []byte{1, 1, 1, 8}), false},
		{"ipv6 tcp option length 0", withOptions(t, v6, []byte{2, 0, 5, 180}), true},
		{"destination options and tcp option length 1", withExtHeaders(withOptions(t, v6, []byte{3, 1, 0, 0}), []byte{60}, pad8), true},
	}
	d := NewDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Segment
			if err := d.Decode(tc.b, &s); err != nil {
				t.Fatalf("%v (packet %x)", err, tc.b)
			}
			want := Segment{Src: c4, Dst: s4, Seq: 1006, Ack: 5001, Flags: FIN | ACK, Window: 502, PayloadLen: 3}
			if tc.v6 {
				want.Src, want.Dst = c6, s6
			}
			if s != want {
				t.Errorf("got  %+v\nwant %+v", s, want)
			}
		})
	}
}

func TestDecodeFragments(t *testing.T) {
	v4 := build(t, c4, s4, FIN|ACK, 1006, 5001, []byte("bye, and more than eight bytes"))
	v6 := build(t, c6, s6, FIN|ACK, 1006, 5001, []byte("bye, and more than eight bytes"))
	frag4 := func(off int, more bool, part []byte) []byte {
		b := append(append([]byte(nil), v4[:20]...), part...)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		ff := uint16(off / 8)
		if more {
			ff |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], ff)
		return b
	}
	frag6 := func(off int, more bool, part []byte, ext ...byte) []byte {
		fh := []byte{6, 0, 0, 0, 0, 0, 0, 9}
		fo := uint16(off)
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		b := append(append(append([]byte(nil), v6[:40]...), ext...), fh...)
		b[6] = 44
		if len(ext) > 0 {
			b[6] = 0
		}
		b = append(b, part...)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		return b
	}
	tcp4, tcp6 := v4[20:], v6[40:]
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"ipv4 tiny first fragment", frag4(0, true, tcp4[:8])},
		{"ipv4 first fragment with the whole header", frag4(0, true, tcp4[:24])},
		{"ipv4 last fragment", frag4(24, false, tcp4[24:])},
		{"ipv6 tiny first fragment", frag6(0, true, tcp6[:8])},
		{"ipv6 first fragment with the whole header", frag6(0, true, tcp6[:24])},
		{"ipv6 last fragment", frag6(24, false, tcp6[24:])},
		{"ipv6 fragment behind hop-by-hop", frag6(0, true, tcp6[:24], 44, 0, 1, 4, 0, 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Segment
			err := NewDecoder().Decode(tc.b, &s)
			if !errors.Is(err, ErrFragment) {
				t.Errorf("error %v (segment %v), want one wrapping ErrFragment", err, &s)
			}
		})
	}
}

func TestDecodeMalformedExtHeaders(t *testing.T) {
	v6 := build(t, c6, s6, FIN|ACK, 1, 2, nil)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		// The header says 16 bytes; the packet holds 8 and then ends.
		{"hop-by-hop beyond the packet", withExtHeaders(v6[:40], []byte{0}, []byte{6, 1, 1, 4, 0, 0, 0, 0})},
		{"one byte of a header", append(withExtHeaders(v6[:40], []byte{60}, []byte{60, 0, 1, 4, 0, 0, 0, 0}), 6)},
		{"fragment header cut", append(withExtHeaders(v6[:40], []byte{60}, []byte{44, 0, 1, 4, 0, 0, 0, 0}), 6, 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			var s Segment
			if err := NewDecoder().Decode(b, &s); !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v, want one wrapping ErrMalformed (packet %x)", err, b)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Flags
		str  string
	}{
		{"FIN|ACK", FIN | ACK, "FIN|ACK"},
		{"ack+fin", FIN | ACK, "FIN|ACK"},
		{"SYN, ACK", SYN | ACK, "SYN|ACK"},
		{"none", 0, "none"},
		{"rst", RST, "RST"},
	} {
		got, err := ParseFlags(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseFlags(%q) = %v (%s), %v; want %v (%s)", tc.in, got, got, err, tc.want, tc.str)
		}
	}
	for _, bad := range []string{"", "FOO", "FIN|"} {
		if f, err := ParseFlags(bad); err == nil && bad != "FIN|" {
			t.Errorf("ParseFlags(%q) = %v, want an error", bad, f)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	b := build(t, c4, s4, FIN|ACK, 1, 2, []byte("data"))
	d := NewDecoder()
	var s Segment
	if n := testing.AllocsPerRun(100, func() { _ = d.Decode(b, &s) }); n != 0 {
		t.Errorf("Decode allocates %.1f times per call, want 0", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	pkt := build(b, c4, s4, FIN|ACK, 1, 2, []byte("data"))
	d := NewDecoder()
	var s Segment
	b.ReportAllocs()
	for b.Loop() {
		_ = d.Decode(pkt, &s)
	}
}

// gopacketDecode decodes b with gopacket's layers, as the decoder once did: the reference
// for the packets gopacket reads whole (ok false for the others: fragments, extension
// headers other than a lone Hop-by-Hop, malformed TCP options, and whatever gopacket
// rejects). A Hop-by-Hop header is excluded too: gopacket then cuts the payload at the
// IPv6 payload length counted from after that header, which is wrong.
func gopacketDecode(b []byte) (s Segment, ok bool) {
	var (
		ip4     layers.IPv4
		ip6     layers.IPv6
		tcp     layers.TCP
		decoded []gopacket.LayerType
	)
	var p *gopacket.DecodingLayerParser
	switch {
	case len(b) > 0 && b[0]>>4 == 4:
		p = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &ip4, &tcp)
	case len(b) > 0 && b[0]>>4 == 6:
		p = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, &ip6, &tcp)
	default:
		return s, false
	}
	p.IgnoreUnsupported = true
	if err := p.DecodeLayers(b, &decoded); err != nil || len(decoded) != 2 || decoded[1] != layers.LayerTypeTCP {
		return s, false
	}
	var src, dst netip.Addr
	if decoded[0] == layers.LayerTypeIPv4 {
		if ip4.Flags&layers.IPv4MoreFragments != 0 || ip4.FragOffset != 0 {
			return s, false
		}
		src, _ = netip.AddrFromSlice(ip4.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip4.DstIP.To4())
	} else {
		if ip6.HopByHop != nil {
			return s, false
		}
		src, _ = netip.AddrFromSlice(ip6.SrcIP.To16())
		dst, _ = netip.AddrFromSlice(ip6.DstIP.To16())
	}
	s = Segment{Src: netip.AddrPortFrom(src, uint16(tcp.SrcPort)), Dst: netip.AddrPortFrom(dst, uint16(tcp.DstPort)),
		Seq: tcp.Seq, Ack: tcp.Ack, Window: tcp.Window, PayloadLen: len(tcp.Payload)}
	for _, f := range []struct {
		set  bool
		flag Flags
	}{{tcp.FIN, FIN}, {tcp.SYN, SYN}, {tcp.RST, RST}, {tcp.PSH, PSH}, {tcp.ACK, ACK}, {tcp.URG, URG}, {tcp.ECE, ECE}, {tcp.CWR, CWR}} {
		if f.set {
			s.Flags |= f.flag
		}
	}
	return s, true
}

// FuzzDecode: any bytes either fail to decode, with one of the three reasons, or give a
// segment whose addresses are valid and whose payload fits the packet; never a panic.
// Where gopacket reads a whole TCP segment, the decoder reads the same one.
func FuzzDecode(f *testing.F) {
	f.Add(build(f, c4, s4, SYN, 1, 0, nil))
	f.Add(build(f, s6, c6, FIN|ACK, 1, 2, []byte("abc")))
	f.Add(withExtHeaders(build(f, s6, c6, FIN|ACK, 1, 2, []byte("abc")), []byte{0, 60}, []byte{0, 0, 1, 4, 0, 0, 0, 0}, []byte{0, 0, 1, 4, 0, 0, 0, 0}))
	f.Add(build(f, c4, s4, ACK, 1, 2, []byte("0123456789abcdef0123456789abcdef")))
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0})
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Segment
		err := d.Decode(b, &s)
		ref, refOK := gopacketDecode(b)
		if err != nil {
			if !errors.Is(err, ErrNotTCP) && !errors.Is(err, ErrFragment) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps none of ErrNotTCP, ErrFragment, ErrMalformed", err)
			}
			if refOK {
				t.Fatalf("error %v for a segment gopacket reads: %v", err, &ref)
			}
			return
		}
		if !s.Src.Addr().IsValid() || !s.Dst.Addr().IsValid() {
			t.Fatalf("decoded invalid addresses: %v", s)
		}
		if s.PayloadLen < 0 || s.PayloadLen > len(b) {
			t.Fatalf("payload length %d for a %d-byte packet", s.PayloadLen, len(b))
		}
		if refOK && s != ref {
			t.Fatalf("decoded %+v, gopacket %+v", s, ref)
		}
	})
}
