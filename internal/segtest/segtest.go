// Package segtest builds whole TCP segments for the engine's tests and fuzzing: the bytes
// a queue would hand over for a segment.Segment, with a payload that depends only on where
// it is in the stream, so that a rewritten or retransmitted segment can be checked byte by
// byte.
package segtest

import (
	"testing"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

// PayloadAt is the stream's content from sequence number seq on: n bytes.
func PayloadAt(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte((seq+uint32(i))%26)
	}
	return b
}

// PacketOf builds the bytes of seg: window 502, timestamps 1000+seq and 7, payload
// PayloadAt(seq).
func PacketOf(t testing.TB, seg segment.Segment) []byte {
	t.Helper()
	s, err := mutate.Spec{Src: seg.Src, Dst: seg.Dst, Flags: seg.Flags, Seq: seg.Seq, Ack: seg.Ack, Window: 502,
		Payload: PayloadAt(seg.Seq, seg.PayloadLen)}.Segment()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTimestamps(1000+seg.Seq, 7); err != nil {
		t.Fatal(err)
	}
	b, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
