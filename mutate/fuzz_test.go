package mutate

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/finproxy/finproxy/segment"
)

// fuzzOps are the operations FuzzMutate drives, each taking the fuzzer's argument.
var fuzzOps = []func(s *Segment, next *Segment, arg uint32) error{
	func(s *Segment, _ *Segment, arg uint32) error { s.SetFlags(segment.Flags(arg)); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.ClearFlags(segment.Flags(arg)); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.MoveSeq(int32(arg)); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.SetSeq(arg); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.MoveAck(int32(arg)); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.SetAck(arg); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.SetWindow(uint16(arg)); return nil },
	func(s *Segment, _ *Segment, _ uint32) error { s.StripTimestamps(); return nil },
	func(s *Segment, _ *Segment, arg uint32) error {
		if arg%2 == 0 {
			s.StripOptions()
		} else {
			s.StripOptions(OptionKind(arg>>1), OptNop)
		}
		return nil
	},
	func(s *Segment, _ *Segment, arg uint32) error { s.KeepOptions(OptionKind(arg), OptMSS); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { return s.SetTimestamps(arg, ^arg) },
	func(s *Segment, next *Segment, _ uint32) error { return s.Append(next) },
	func(s *Segment, next *Segment, arg uint32) error {
		// Append next as if it followed s, whatever its seq and endpoints.
		next.SetSeq(s.Seq() + uint32(len(s.Payload())))
		next.SetSrcPort(s.Src().Port())
		next.SetDstPort(s.Dst().Port())
		if next.Src().Addr() != s.Src().Addr() || next.Dst().Addr() != s.Dst().Addr() {
			return nil
		}
		next.ClearFlags(segment.SYN | segment.RST)
		s.ClearFlags(segment.FIN | segment.RST)
		return s.Append(next)
	},
	func(s *Segment, _ *Segment, arg uint32) error {
		s.SetPayload(bytes.Repeat([]byte{byte(arg)}, int(arg%2000)))
		return nil
	},
	func(s *Segment, _ *Segment, arg uint32) error { s.SetSrcPort(uint16(arg)); return nil },
	func(s *Segment, _ *Segment, arg uint32) error { s.SetDstPort(uint16(arg >> 16)); return nil },
}

// FuzzMutate: any packet through any operation either fails (to parse, to change, to
// serialize) or gives a segment that Check accepts (lengths, IPv4 and TCP checksums
// recomputed independently), that package segment decodes, and that parses back to the
// same bytes; never a panic. Second packets for Append come from the same input.
func FuzzMutate(f *testing.F) {
	for _, fam := range []string{"v4", "v6"} {
		for _, k := range []string{"data", "fin", "syn"} {
			b, _ := hex.DecodeString(inputs[fam][k])
			for op := range fuzzOps {
				f.Add(b, b, uint8(op), uint32(op*7919))
			}
		}
	}
	f.Add([]byte{0x45}, []byte{}, uint8(0), uint32(0))
	dec := segment.NewDecoder()
	f.Fuzz(func(t *testing.T, pkt, other []byte, op uint8, arg uint32) {
		s, err := Parse(pkt)
		if err != nil {
			return
		}
		next, err := Parse(other)
		if err != nil {
			next, _ = Parse(pkt)
		}
		if err := fuzzOps[int(op)%len(fuzzOps)](s, next, arg); err != nil {
			return
		}
		out, err := s.Bytes()
		if err != nil {
			return
		}
		if err := Check(out); err != nil {
			t.Fatalf("op %d: Bytes gave a segment that fails Check: %v\n%x", op, err, out)
		}
		if err := independentCheck(out); err != nil {
			t.Fatalf("op %d: %v\n%x", op, err, out)
		}
		var seg segment.Segment
		if err := dec.Decode(out, &seg); err != nil {
			t.Fatalf("op %d: the output does not decode: %v\n%x", op, err, out)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("op %d: the output does not parse: %v\n%x", op, err, out)
		}
		if seg != again.Info() {
			t.Fatalf("op %d: segment decodes %v, mutate parses %v", op, &seg, again)
		}
		b, err := again.Bytes()
		if err != nil || !bytes.Equal(b, out) {
			t.Fatalf("op %d: second round trip %x, %v; want %x", op, b, err, out)
		}
	})
}
