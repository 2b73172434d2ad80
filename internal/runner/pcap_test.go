package runner

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/google/go-cmp/cmp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// tcpPacket builds an IPv4 TCP segment from the client to the server.
func tcpPacket(t *testing.T, fin, ack bool, seq uint32) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: cAddr.Addr().AsSlice(), DstIP: sAddr.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(cAddr.Port()), DstPort: layers.TCPPort(sAddr.Port()),
		Seq: seq, Ack: 7, FIN: fin, ACK: ack, Window: 500}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pcapBlock is a block of a pcapng file as the test reads it back.
type pcapBlock struct {
	Type    uint32
	TS      int64 // EPB: nanoseconds (the interface's if_tsresol is 9)
	Data    []byte
	Comment string
	Options map[uint16][]byte
}

// readPcapng parses a little-endian pcapng file block by block, independently of the
// writer, checking the framing (lengths at both ends, 32-bit alignment).
func readPcapng(t *testing.T, b []byte) []pcapBlock {
	t.Helper()
	var out []pcapBlock
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("truncated block: %d bytes", len(b))
		}
		typ, n := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint32(b[4:]))
		if n%4 != 0 || n > len(b) || n < 12 {
			t.Fatalf("block length %d (of %d bytes left)", n, len(b))
		}
		if tail := int(binary.LittleEndian.Uint32(b[n-4:])); tail != n {
			t.Fatalf("block length %d at the start, %d at the end", n, tail)
		}
		body := b[8 : n-4]
		blk := pcapBlock{Type: typ, Options: map[uint16][]byte{}}
		var opts []byte
		switch typ {
		case pcapngSHB:
			opts = body[16:]
		case pcapngIDB:
			opts = body[8:]
		case pcapngEPB:
			blk.TS = int64(binary.LittleEndian.Uint32(body[4:]))<<32 | int64(binary.LittleEndian.Uint32(body[8:]))
			capLen := int(binary.LittleEndian.Uint32(body[12:]))
			blk.Data = body[20 : 20+capLen]
			opts = body[20+pad4(capLen):]
		default:
			t.Fatalf("unexpected block type %#x", typ)
		}
		for len(opts) >= 4 {
			code, l := binary.LittleEndian.Uint16(opts), int(binary.LittleEndian.Uint16(opts[2:]))
			if code == pcapngOptEnd {
				if len(opts) != 4 {
					t.Fatalf("%d bytes after opt_endofopt", len(opts)-4)
				}
				break
			}
			blk.Options[code] = opts[4 : 4+l]
			opts = opts[4+pad4(l):]
		}
		blk.Comment = string(blk.Options[pcapngOptComment])
		out = append(out, blk)
		b = b[n:]
	}
	return out
}

func TestPcapngWriterFormat(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapngWriter(&buf, "finproxy run -c test", "nfqueue7400", "queued segments")
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := tcpPacket(t, true, true, 1001), tcpPacket(t, false, true, 1002)
	at := time.Unix(1763782861, 123456789)
	if err := w.WritePacket(at, p1, "finproxy: dropped by drop-final-ack"); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(at.Add(time.Millisecond), p2, ""); err != nil {
		t.Fatal(err)
	}
	blocks := readPcapng(t, buf.Bytes())
	if len(blocks) != 4 {
		t.Fatalf("%d blocks, want SHB, IDB, 2 EPB", len(blocks))
	}
	if blocks[0].Type != pcapngSHB || blocks[0].Comment != "finproxy run -c test" || string(blocks[0].Options[shbUserAppl]) != "finproxy" {
		t.Errorf("section header: %+v", blocks[0])
	}
	if blocks[1].Type != pcapngIDB || string(blocks[1].Options[idbName]) != "nfqueue7400" || !bytes.Equal(blocks[1].Options[idbTsresol], []byte{9}) {
		t.Errorf("interface: %+v", blocks[1])
	}
	if b := blocks[2]; b.TS != at.UnixNano() || !bytes.Equal(b.Data, p1) || b.Comment != "finproxy: dropped by drop-final-ack" {
		t.Errorf("first packet: ts %d, comment %q, data equal %v", b.TS, b.Comment, bytes.Equal(b.Data, p1))
	}
	if b := blocks[3]; len(b.Options) != 0 || !bytes.Equal(b.Data, p2) {
		t.Errorf("second packet: options %v", b.Options)
	}

	// gopacket's reader agrees on the link type, the timestamps and the packets.
	r, err := pcapgo.NewNgReader(bytes.NewReader(buf.Bytes()), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeRaw && r.LinkType() != layers.LinkType(LinkTypeRaw) {
		t.Errorf("link type %v", r.LinkType())
	}
	for i, want := range [][]byte{p1, p2} {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(data, want) || !ci.Timestamp.Equal(at.Add(time.Duration(i)*time.Millisecond)) {
			t.Errorf("packet %d: ts %v, equal %v", i, ci.Timestamp, bytes.Equal(data, want))
		}
		pkt := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
		if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); !ok || tcp.Seq != 1001+uint32(i) {
			t.Errorf("packet %d does not decode as the TCP segment written", i)
		}
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Errorf("after the packets: %v, want EOF", err)
	}
}

func TestPacketComment(t *testing.T) {
	base := rules.Record{Side: rules.Client, Flags: segment.ACK}
	with := func(f func(*rules.Record)) rules.Record { r := base; f(&r); return r }
	for _, c := range []struct {
		r    rules.Record
		left bool
		want string
	}{
		{base, false, "finproxy: accepted (no rule)"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.Verdict = "drop-final-ack", "drop", rules.Drop }), false,
			"finproxy: dropped by drop-final-ack"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.HeldNS = "hold-client-fin", "hold", 240e6 }), false,
			"finproxy: held 240ms by hold-client-fin, then accepted"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.HeldNS = "slow", "delay", 200e6 }), false,
			"finproxy: delayed 200ms by slow, then accepted"},
		{with(func(r *rules.Record) {
			r.Rule, r.Action, r.Verdict, r.HeldNS = "merge-ack", "merge", rules.Drop, 1234567
		}), false,
			"finproxy: held 1.235ms by merge-ack, then merged into the FIN (dropped)"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.HeldNS = "merge-ack", "merge", 1e9 }), false,
			"finproxy: held 1s by merge-ack, then accepted"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.Modified = "shrink-window", "rewrite", true }), false,
			"finproxy: rewritten by shrink-window, accepted (as it arrived)"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.Modified = "shrink-window", "rewrite", true }), true,
			"finproxy: rewritten by shrink-window, accepted (as it left)"},
		{with(func(r *rules.Record) { r.Rule, r.Action, r.Injected = "rst", "inject", true }), true,
			"finproxy: injected by rst"},
	} {
		if got := PacketComment(c.r, c.left); got != c.want {
			t.Errorf("PacketComment(%+v, %v) = %q, want %q", c.r, c.left, got, c.want)
		}
	}
}

// The capture writes each queued packet when its record arrives, in timestamp order even
// when verdicts come out of order (a held segment), the rewritten segment also as it
// left, an injected one, and at the end what never got a record.
func TestPcapCapture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcapng")
	c, err := openPcap(path, "test", "nfqueue1", nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(ms int) time.Time { return time.Unix(1763782861, 0).Add(time.Duration(ms) * time.Millisecond) }
	fin, ack1, ack2, lost := tcpPacket(t, true, true, 1), tcpPacket(t, false, true, 2), tcpPacket(t, false, true, 3), tcpPacket(t, false, true, 4)
	out := tcpPacket(t, false, true, 99)
	inj := tcpPacket(t, false, false, 50)
	rec := func(id uint32, q, v int, f func(*rules.Record)) rules.Record {
		r := rules.Record{ID: id, Time: at(q).UnixNano(), VerdictTime: at(v).UnixNano(), HeldNS: int64(v-q) * 1e6, Side: rules.Client}
		if f != nil {
			f(&r)
		}
		return r
	}

	c.capture(1, at(0), fin) // held for 240 ms
	c.capture(2, at(10), ack1)
	c.record(rec(2, 10, 10, nil))
	c.capture(3, at(20), ack2) // rewritten
	c.record(rec(3, 20, 20, func(r *rules.Record) {
		r.Rule, r.Action, r.Modified, r.Out = "rw", "rewrite", true, out
	}))
	c.record(rec(0, 30, 30, func(r *rules.Record) { r.Rule, r.Action, r.Injected, r.Out = "inj", "inject", true, inj }))
	if c.written != 0 {
		t.Errorf("%d packets written while the FIN queued before them awaits its verdict", c.written)
	}
	c.record(rec(1, 0, 240, func(r *rules.Record) { r.Rule, r.Action = "hold-fin", "hold" }))
	c.capture(4, at(300), lost) // never gets a record
	c.record(rec(77, 310, 310, nil))
	n, notWritten, missing, err := c.close()
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 || missing != 1 || notWritten != 0 {
		t.Errorf("written %d, missing %d, lost %d; want 6, 1 and 0", n, missing, notWritten)
	}
	c.capture(5, at(400), lost) // after close: ignored
	c.record(rec(5, 400, 400, nil))

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type pkt struct {
		MS      int
		Seq     byte
		Comment string
	}
	var got []pkt
	for _, blk := range readPcapng(t, b)[2:] {
		got = append(got, pkt{int((blk.TS - at(0).UnixNano()) / 1e6), blk.Data[27], blk.Comment})
	}
	want := []pkt{
		{0, 1, "finproxy: held 240ms by hold-fin, then accepted"},
		{10, 2, "finproxy: accepted (no rule)"},
		{20, 3, "finproxy: rewritten by rw, accepted (as it arrived)"},
		{20, 99, "finproxy: rewritten by rw, accepted (as it left)"},
		{30, 50, "finproxy: injected by inj"},
		{300, 4, "finproxy: no verdict recorded"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets (-want +got):\n%s", diff)
	}
}
