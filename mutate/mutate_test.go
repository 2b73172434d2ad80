package mutate

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/internal/golden"
	"github.com/finproxy/finproxy/segment"
)

// Real segments recorded on loopback (Linux 6.18, from segment/testdata/segments.txt):
// a data segment with timestamps and the bare FIN after it, and a SYN with every option
// Linux sends, over IPv4 and IPv6. Their TCP checksum fields hold only the pseudo-header
// sum (checksum offload: the kernel completes them on the way out), as NFQUEUE delivers
// such packets; Bytes always writes the full checksum, since the kernel takes a packet
// returned with a verdict as complete.
var inputs = map[string]map[string]string{
	"v4": {
		"data": "4500003a84e040004006b7db7f0000017f000001a7441f90a7b7cad18e2ec9fa80180040fe2e00000101080a2aa492183a3fb75c68656c6c6f0a",
		"fin":  "4500003484e240004006b7df7f0000017f000001a7441f90a7b7cad78e2eca0080110040fe2800000101080a2aa492193a3fb75c",
		"syn":  "4500003c84de40004006b7db7f0000017f000001a7441f90a7b7cad000000000a002ffd7fe3000000204ffd70402080a2aa49218000000000103030a",
	},
	"v6": {
		"data": "600073330026064000000000000000000000000000000001000000000000000000000000000000018af41f90e2c0383f3b061aaf80180040002e00000101080a5d49848814eb1f8068656c6c6f0a",
		"fin":  "600073330020064000000000000000000000000000000001000000000000000000000000000000018af41f90e2c038453b061ab580110040002800000101080a5d49848814eb1f80",
		"syn":  "600073330028064000000000000000000000000000000001000000000000000000000000000000018af41f90e2c0383e00000000a002ffc4003000000204ffc40402080a5d498488000000000103030a",
	},
}

// operation is one golden case: a change applied to a recorded segment (or a crafted one).
type operation struct {
	name, desc string
	in         string // key in inputs
	apply      func(s *Segment, in map[string]*Segment) error
	// check is what must hold of the result besides the golden bytes.
	check func(t *testing.T, before, after *Segment)
}

var operations = []operation{
	{"set-fin", "SetFlags(FIN) on a data segment", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetFlags(segment.FIN); return nil },
		func(t *testing.T, b, a *Segment) { wantFlags(t, a, b.Flags()|segment.FIN) }},
	{"clear-fin", "ClearFlags(FIN) on a FIN|ACK: a pure ACK with the same seq", "fin",
		func(s *Segment, _ map[string]*Segment) error { s.ClearFlags(segment.FIN); return nil },
		func(t *testing.T, b, a *Segment) { wantFlags(t, a, segment.ACK) }},
	{"set-rst-clear-ack", "SetFlags(RST), ClearFlags(ACK|PSH) on a data segment", "data",
		func(s *Segment, _ map[string]*Segment) error {
			s.SetFlags(segment.RST)
			s.ClearFlags(segment.ACK | segment.PSH)
			return nil
		},
		func(t *testing.T, b, a *Segment) { wantFlags(t, a, segment.RST) }},
	{"move-seq", "MoveSeq(+100000)", "data",
		func(s *Segment, _ map[string]*Segment) error { s.MoveSeq(100000); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "seq", a.Seq(), b.Seq()+100000) }},
	{"move-seq-back", "MoveSeq(-7): across zero is modulo 2^32", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetSeq(3); s.MoveSeq(-7); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "seq", a.Seq(), uint32(0xfffffffc)) }},
	{"move-ack", "MoveAck(-1)", "data",
		func(s *Segment, _ map[string]*Segment) error { s.MoveAck(-1); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "ack", a.Ack(), b.Ack()-1) }},
	{"set-seq-ack", "SetSeq(1), SetAck(2)", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetSeq(1); s.SetAck(2); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "seq", a.Seq(), 1); wantEq(t, "ack", a.Ack(), 2) }},
	{"set-window", "SetWindow(0): a zero window", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetWindow(0); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "window", a.Window(), 0) }},
	{"strip-timestamps", "StripTimestamps: the NOPs stay, the header shrinks by 8 bytes", "data",
		func(s *Segment, _ map[string]*Segment) error { s.StripTimestamps(); return nil },
		func(t *testing.T, b, a *Segment) {
			if _, _, ok := a.Timestamps(); ok {
				t.Error("timestamps still there")
			}
			wantEq(t, "payload", string(a.Payload()), string(b.Payload()))
		}},
	{"strip-options", "StripOptions(): no options at all", "syn",
		func(s *Segment, _ map[string]*Segment) error { s.StripOptions(); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "options", len(a.Options()), 0) }},
	{"keep-mss", "KeepOptions(MSS) on a SYN", "syn",
		func(s *Segment, _ map[string]*Segment) error { s.KeepOptions(OptMSS); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "options", fmt.Sprint(a.Options()), "[2]") }},
	{"keep-timestamps", "KeepOptions(timestamps) on a SYN: the header padded to 32 bits", "syn",
		func(s *Segment, _ map[string]*Segment) error { s.KeepOptions(OptTimestamps); return nil },
		func(t *testing.T, b, a *Segment) {
			bv, be, _ := b.Timestamps()
			av, ae, ok := a.Timestamps()
			if !ok || av != bv || ae != be {
				t.Errorf("timestamps %d %d %v, want %d %d", av, ae, ok, bv, be)
			}
		}},
	{"set-timestamps", "SetTimestamps(1, 2)", "data",
		func(s *Segment, _ map[string]*Segment) error { return s.SetTimestamps(1, 2) },
		func(t *testing.T, b, a *Segment) {
			v, e, ok := a.Timestamps()
			if !ok || v != 1 || e != 2 {
				t.Errorf("timestamps %d %d %v", v, e, ok)
			}
		}},
	{"add-timestamps", "StripOptions() then SetTimestamps(7, 0): NOP, NOP, TS added", "data",
		func(s *Segment, _ map[string]*Segment) error { s.StripOptions(); return s.SetTimestamps(7, 0) },
		func(t *testing.T, b, a *Segment) { wantEq(t, "options", fmt.Sprint(a.Options()), "[1 1 8]") }},
	{"append-fin", "Append(the bare FIN after it): one segment with the data and the FIN", "data",
		func(s *Segment, in map[string]*Segment) error { return s.Append(in["fin"]) },
		func(t *testing.T, b, a *Segment) {
			wantFlags(t, a, segment.FIN|segment.PSH|segment.ACK)
			wantEq(t, "seq", a.Seq(), b.Seq())
			wantEq(t, "payload", string(a.Payload()), "hello\n")
		}},
	{"append-payload", "Append(a copy of itself moved after it): the payload twice", "data",
		func(s *Segment, in map[string]*Segment) error {
			next := in["data2"]
			next.MoveSeq(int32(len(next.Payload())))
			return s.Append(next)
		},
		func(t *testing.T, b, a *Segment) { wantEq(t, "payload", string(a.Payload()), "hello\nhello\n") }},
	{"set-payload", "SetPayload(\"bye\\n\")", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetPayload([]byte("bye\n")); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "payload", string(a.Payload()), "bye\n") }},
	{"src-port", "SetSrcPort(40000): a client port rewritten", "data",
		func(s *Segment, _ map[string]*Segment) error { s.SetSrcPort(40000); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "src port", a.Src().Port(), 40000) }},
	{"dst-port", "SetDstPort(40000): the reply to a rewritten client port", "fin",
		func(s *Segment, _ map[string]*Segment) error { s.SetDstPort(40000); return nil },
		func(t *testing.T, b, a *Segment) { wantEq(t, "dst port", a.Dst().Port(), 40000) }},
	{"build-rst", "Reset: a RST|ACK from the receiver of the data, seq = its ack, ack = seq + len", "data",
		func(s *Segment, _ map[string]*Segment) error {
			b, err := Reset(s.Dst(), s.Src(), s.Ack(), s.Seq()+uint32(len(s.Payload())))
			if err != nil {
				return err
			}
			n, err := Parse(b)
			if err != nil {
				return err
			}
			*s = *n
			return nil
		},
		func(t *testing.T, b, a *Segment) {
			wantFlags(t, a, segment.RST|segment.ACK)
			wantEq(t, "src", a.Src(), b.Dst())
			wantEq(t, "seq", a.Seq(), b.Ack())
		}},
}

func wantFlags(t *testing.T, s *Segment, f segment.Flags) {
	t.Helper()
	if s.Flags() != f {
		t.Errorf("flags %s, want %s", s.Flags(), f)
	}
}

func wantEq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s %v, want %v", what, got, want)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run applies op to the family's inputs and returns the input and the output bytes.
func (op operation) run(t *testing.T, fam string) (in, out []byte) {
	t.Helper()
	segs := map[string]*Segment{}
	for k, h := range inputs[fam] {
		s, err := Parse(mustHex(t, h))
		if err != nil {
			t.Fatalf("parse %s %s: %v", fam, k, err)
		}
		segs[k] = s
	}
	data2, _ := Parse(mustHex(t, inputs[fam]["data"]))
	segs["data2"] = data2
	in = mustHex(t, inputs[fam][op.in])
	s, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := Parse(in)
	if err := op.apply(s, segs); err != nil {
		t.Fatalf("%s: %v", op.name, err)
	}
	out, err = s.Bytes()
	if err != nil {
		t.Fatalf("%s: Bytes: %v", op.name, err)
	}
	// The output re-decodes, with valid lengths and checksums, to what was asked.
	if err := Check(out); err != nil {
		t.Errorf("%s %s: %v", op.name, fam, err)
	}
	if err := independentCheck(out); err != nil {
		t.Errorf("%s %s: %v", op.name, fam, err)
	}
	var seg segment.Segment
	if err := segment.NewDecoder().Decode(out, &seg); err != nil {
		t.Errorf("%s %s: the output does not decode: %v", op.name, fam, err)
	}
	after, err := Parse(out)
	if err != nil {
		t.Fatalf("%s %s: the output does not parse: %v", op.name, fam, err)
	}
	if seg != after.Info() {
		t.Errorf("%s %s: segment decodes %v, mutate %v", op.name, fam, &seg, after)
	}
	op.check(t, before, after)
	return in, out
}

// Golden: for every operation, over IPv4 and IPv6, the input's hex and the output's hex
// (testdata/NAME.golden; go test -update rewrites them).
func TestGolden(t *testing.T) {
	for _, op := range operations {
		t.Run(op.name, func(t *testing.T) {
			var b strings.Builder
			fmt.Fprintf(&b, "# %s\n", op.desc)
			for _, fam := range []string{"v4", "v6"} {
				in, out := op.run(t, fam)
				s, _ := Parse(out)
				fmt.Fprintf(&b, "%s in   %x\n%s out  %x\n%s seg  %s\n", fam, in, fam, out, fam, s)
			}
			path := filepath.Join("testdata", op.name+".golden")
			if golden.Update() {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if b.String() != string(want) {
				t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, b.String(), want)
			}
		})
	}
}

// Every golden file belongs to an operation (none left over from a renamed one).
func TestGoldenFilesUsed(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".golden")
		if !slices.ContainsFunc(operations, func(op operation) bool { return op.name == name }) {
			t.Errorf("%s: no operation %s", f, name)
		}
	}
}

// independentCheck recomputes the checksums from scratch, with a different summing method
// than Check (byte pairs into a uint64, folded once at the end), zeroing the checksum
// fields and comparing with what the packet carries.
func independentCheck(b []byte) error {
	csum := func(parts ...[]byte) uint16 {
		var all []byte
		for _, p := range parts {
			all = append(all, p...)
		}
		if len(all)%2 == 1 {
			all = append(all, 0)
		}
		var s uint64
		for i := 0; i < len(all); i += 2 {
			s += uint64(all[i])<<8 + uint64(all[i+1])
		}
		for s>>16 != 0 {
			s = s&0xffff + s>>16
		}
		return ^uint16(s)
	}
	be16 := func(x []byte) uint16 { return uint16(x[0])<<8 | uint16(x[1]) }
	var pseudo, tcp []byte
	if b[0]>>4 == 4 {
		ihl := int(b[0]&0xf) * 4
		h := slices.Clone(b[:ihl])
		h[10], h[11] = 0, 0
		if got, want := be16(b[10:12]), csum(h); got != want {
			return fmt.Errorf("IPv4 header checksum %#x, recomputed %#x", got, want)
		}
		tcp = b[ihl:]
		pseudo = append(slices.Clone(b[12:20]), 0, 6, byte(len(tcp)>>8), byte(len(tcp)))
	} else {
		tcp = b[40:]
		pseudo = append(slices.Clone(b[8:40]), 0, 0, byte(len(tcp)>>8), byte(len(tcp)), 0, 0, 0, 6)
	}
	seg := slices.Clone(tcp)
	seg[16], seg[17] = 0, 0
	if got, want := be16(tcp[16:18]), csum(pseudo, seg); got != want {
		return fmt.Errorf("TCP checksum %#x, recomputed %#x", got, want)
	}
	return nil
}

func TestParseErrors(t *testing.T) {
	v4 := mustHex(t, inputs["v4"]["data"])
	v6 := mustHex(t, inputs["v6"]["data"])
	udp := slices.Clone(v4)
	udp[9] = 17
	frag := slices.Clone(v4)
	frag[6] |= 0x20
	ext := slices.Clone(v6)
	ext[6] = 0 // hop-by-hop
	// The same segment behind a real Destination Options header (8 bytes, one PadN).
	dest := slices.Concat(v6[:40], []byte{6, 0, 1, 4, 0, 0, 0, 0}, v6[40:])
	dest[6] = 60
	dest[5] += 8
	// A TCP option of length 0 in place of the first 4 option bytes (the segment of
	// "v4" has options): Linux reads the segment, gopacket cannot read the options.
	opt0 := slices.Clone(v4)
	ihl := int(v4[0]&0x0f) * 4
	if int(v4[ihl+12]>>4)*4 < 24 {
		t.Fatal("input v4 has no options to break")
	}
	copy(opt0[ihl+20:], []byte{8, 0, 0, 0})
	sack := slices.Clone(v4)
	copy(sack[ihl+20:], []byte{5, 40, 0, 0})
	for _, tc := range []struct {
		name string
		b    []byte
		is   error
	}{
		{"empty", nil, segment.ErrNotTCP},
		{"version 5", []byte{0x50, 0, 0, 0}, segment.ErrNotTCP},
		{"UDP", udp, segment.ErrNotTCP},
		{"fragment", frag, segment.ErrFragment},
		{"IPv6 extension header", ext, ErrUnsupported},
		{"IPv6 destination options", dest, ErrUnsupported},
		{"TCP option length 0", opt0, ErrUnsupported},
		{"over-long SACK", sack, ErrUnsupported},
		{"truncated IPv4", v4[:len(v4)-1], ErrTruncated},
		{"truncated IPv6", v6[:len(v6)-1], ErrTruncated},
		{"short IPv4 header", v4[:12], ErrTruncated},
		{"truncated TCP header", func() []byte { b := slices.Clone(v4[:30]); b[3] = 30; return b }(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.b)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v does not wrap %v", err, tc.is)
			}
		})
	}
}

// full returns the input with its checksums completed: the packet as a kernel that did
// not offload them would have sent it.
func full(t *testing.T, fam, k string) []byte {
	t.Helper()
	s, err := Parse(mustHex(t, inputs[fam][k]))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Link padding after the IP packet is dropped; the segment is otherwise unchanged.
func TestParseTrailingBytes(t *testing.T) {
	in := full(t, "v4", "fin")
	s, err := Parse(append(slices.Clone(in), 0, 0, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Bytes()
	if err != nil || !bytes.Equal(out, in) {
		t.Errorf("round trip: %x, %v; want %x", out, err, in)
	}
}

// Parse then Bytes gives the packet back byte for byte, but for the checksums, which it
// completes.
func TestRoundTrip(t *testing.T) {
	for fam, m := range inputs {
		for k, h := range m {
			in := mustHex(t, h)
			out := full(t, fam, k)
			if err := Check(out); err != nil {
				t.Errorf("%s %s: %v", fam, k, err)
			}
			again, err := Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := again.Bytes(); err != nil || !bytes.Equal(b, out) {
				t.Errorf("%s %s: second round trip %x, %v; want %x", fam, k, b, err, out)
			}
			tcp := 20
			if fam == "v6" {
				tcp = 40
			}
			for _, b := range [][]byte{in, out} {
				b[tcp+16], b[tcp+17] = 0, 0
			}
			if !bytes.Equal(in, out) {
				t.Errorf("%s %s: %x; want %x (checksums aside)", fam, k, out, in)
			}
		}
	}
}

// Parse does not keep the caller's buffer.
func TestParseCopies(t *testing.T) {
	in := mustHex(t, inputs["v4"]["data"])
	s, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	want := s.String()
	for i := range in {
		in[i] = 0xff
	}
	if s.String() != want || string(s.Payload()) != "hello\n" {
		t.Errorf("the segment changed with the caller's buffer: %s", s)
	}
}

func TestAppendErrors(t *testing.T) {
	get := func(k string) *Segment {
		s, err := Parse(mustHex(t, inputs["v4"][k]))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	gap := get("fin")
	gap.MoveSeq(1)
	other := get("fin")
	other.SetSrcPort(1)
	fin := get("fin")
	for _, tc := range []struct {
		name      string
		s, next   *Segment
		wantInErr string
	}{
		{"gap", get("data"), gap, "not contiguous"},
		{"other connection", get("data"), other, "not the same direction"},
		{"after a FIN", fin, get("fin"), "nothing may follow"},
		{"a SYN", get("data"), get("syn"), "append a segment with SYN"},
	} {
		if err := tc.s.Append(tc.next); err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.wantInErr)
		}
	}
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		ok       bool
	}{
		{"198.18.1.2:40000", "198.18.2.2:8080", true},
		{"[fd00:f1:1::2]:40000", "[fd00:f1:2::2]:8080", true},
		{"[::ffff:198.18.1.2]:40000", "198.18.2.2:8080", true},
		{"198.18.1.2:40000", "[fd00:f1:2::2]:8080", false},
	} {
		sp := Spec{Src: netip.MustParseAddrPort(tc.src), Dst: netip.MustParseAddrPort(tc.dst),
			Flags: segment.PSH | segment.ACK, Seq: 5, Ack: 6, Window: 100, Payload: []byte("x")}
		b, err := Build(sp)
		if (err == nil) != tc.ok {
			t.Errorf("%s > %s: %v", tc.src, tc.dst, err)
			continue
		}
		if !tc.ok {
			continue
		}
		if err := independentCheck(b); err != nil {
			t.Error(err)
		}
		var s segment.Segment
		if err := segment.NewDecoder().Decode(b, &s); err != nil {
			t.Fatal(err)
		}
		want := segment.Segment{Src: netip.AddrPortFrom(sp.Src.Addr().Unmap(), sp.Src.Port()), Dst: sp.Dst,
			Seq: 5, Ack: 6, Window: 100, Flags: segment.PSH | segment.ACK, PayloadLen: 1}
		if s != want {
			t.Errorf("built %v, want %v", &s, &want)
		}
	}
}

func TestBytesLimits(t *testing.T) {
	s, err := Parse(mustHex(t, inputs["v4"]["syn"]))
	if err != nil {
		t.Fatal(err)
	}
	// The SYN's options take 20 bytes; four more timestamps would not fit in 40.
	s.StripOptions()
	for range 3 {
		if err := s.SetTimestamps(1, 1); err != nil {
			t.Fatal(err)
		}
		s.tcp.Options = append(s.tcp.Options, s.tcp.Options...)
	}
	if _, err := s.Bytes(); err == nil {
		t.Error("no error for a TCP header longer than 60 bytes")
	}
	d, _ := Parse(mustHex(t, inputs["v6"]["data"]))
	d.SetPayload(make([]byte, 70000))
	if _, err := d.Bytes(); err == nil {
		t.Error("no error for a 70000-byte IPv6 payload")
	}
}

func TestCheckFindsErrors(t *testing.T) {
	good := full(t, "v4", "data")
	good6 := full(t, "v6", "data")
	if err := Check(mustHex(t, inputs["v4"]["data"])); err == nil {
		t.Error("no error for a partial (offloaded) checksum")
	}
	if err := Check(good); err != nil {
		t.Fatal(err)
	}
	if err := Check(good6); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() []byte{
		"ip checksum":  func() []byte { b := slices.Clone(good); b[10]++; return b },
		"tcp checksum": func() []byte { b := slices.Clone(good); b[len(b)-1]++; return b },
		"v6 checksum":  func() []byte { b := slices.Clone(good6); b[len(b)-1]++; return b },
		"length":       func() []byte { return append(slices.Clone(good), 0) },
		"v6 length":    func() []byte { return good6[:len(good6)-1] },
		"offset":       func() []byte { b := slices.Clone(good); b[32] = 0xf0; return b },
	} {
		if err := Check(f()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
