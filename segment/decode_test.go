package segment

import (
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
	tests := []struct {
		name   string
		b      []byte
		notTCP bool
	}{
		{"empty", nil, true},
		{"version 5", []byte{0x50, 0, 0, 0}, true},
		{"truncated IPv4 header", good[:10], false},
		{"truncated TCP header", good[:30], false},
		{"UDP", udp, true},
		{"fragment", frag, true},
	}
	d := NewDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Segment
			err := d.Decode(tc.b, &s)
			if err == nil {
				t.Fatalf("no error for %x", tc.b)
			}
			if tc.notTCP && !errors.Is(err, ErrNotTCP) {
				t.Errorf("error %v does not wrap ErrNotTCP", err)
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

// FuzzDecode: any bytes either fail to decode or give a segment whose addresses are valid
// and whose payload fits the packet; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add(build(f, c4, s4, SYN, 1, 0, nil))
	f.Add(build(f, s6, c6, FIN|ACK, 1, 2, []byte("abc")))
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0})
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Segment
		if err := d.Decode(b, &s); err != nil {
			return
		}
		if !s.Src.Addr().IsValid() || !s.Dst.Addr().IsValid() {
			t.Fatalf("decoded invalid addresses: %v", s)
		}
		if s.PayloadLen < 0 || s.PayloadLen > len(b) {
			t.Fatalf("payload length %d for a %d-byte packet", s.PayloadLen, len(b))
		}
	})
}
