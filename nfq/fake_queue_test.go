package nfq

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestFakeQueue(t *testing.T) {
	var q *Queue
	var mu sync.Mutex
	var got []Packet
	h := func(p Packet) {
		mu.Lock()
		got = append(got, Packet{ID: p.ID, Data: bytes.Clone(p.Data), OrigLen: p.OrigLen})
		mu.Unlock()
		switch p.ID % 3 {
		case 0:
			_ = q.Accept(p.ID)
		case 1:
			_ = q.Drop(p.ID)
		case 2:
			_ = q.AcceptModified(p.ID, append([]byte("new:"), p.Data...))
		}
	}
	q, k, err := OpenFake(context.Background(), Config{Num: 9, Logger: discard()}, h)
	if err != nil {
		t.Fatal(err)
	}
	type verdict struct {
		id     uint32
		accept bool
		data   string
	}
	var verdicts []verdict
	k.OnVerdict = func(id uint32, accept bool, data []byte) {
		verdicts = append(verdicts, verdict{id, accept, string(data)})
	}
	for id := uint32(3); id < 9; id++ {
		if !k.Deliver(id, []byte{byte(id), 'x', 'y'}) {
			t.Fatal("Deliver: queue closed")
		}
	}
	k.Flush()
	want := []verdict{{3, true, ""}, {4, false, ""}, {5, true, "new:\x05xy"}, {6, true, ""}, {7, false, ""}, {8, true, "new:\x08xy"}}
	if len(verdicts) != len(want) {
		t.Fatalf("verdicts %v, want %v", verdicts, want)
	}
	for i := range want {
		if verdicts[i] != want[i] {
			t.Errorf("verdict %d: %+v, want %+v", i, verdicts[i], want[i])
		}
	}
	if v := k.Verdicts(); v.Accepted != 4 || v.Dropped != 2 || v.Modified != 2 || v.LastID != 8 || !v.LastAccept {
		t.Errorf("counts %+v", v)
	}
	for i, p := range got {
		if p.ID != uint32(i+3) || !bytes.Equal(p.Data, []byte{byte(p.ID), 'x', 'y'}) || p.OrigLen != 3 {
			t.Errorf("packet %d: %+v", i, p)
		}
	}
	st := q.Stats()
	if st.Received != 6 || st.Verdicts != 6 || st.VerdictLatency.Count != 6 {
		t.Errorf("stats %+v", st)
	}
	if ks, err := q.KernelStats(); err != nil || ks.Queue != 9 {
		t.Errorf("kernel stats %+v, %v", ks, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	<-q.Done()
	if k.Deliver(10, []byte{1}) {
		t.Error("Deliver after Close succeeded")
	}
	if err := q.Accept(10); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

func TestFakeQueueContextCloses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	q, _, err := OpenFake(ctx, Config{Num: 1, Logger: discard()}, func(Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-q.Done()
	if q.Err() != nil {
		t.Errorf("Err %v", q.Err())
	}
}

// The queue's own part of the hot path, from the datagram the kernel sends to the verdict
// message the queue writes (reader, decoding, Handler call, verdict encoding, latency
// bookkeeping), allocates nothing.
func TestQueuePathAllocs(t *testing.T) {
	var q *Queue
	q, k, err := OpenFake(context.Background(), Config{Num: 1, Logger: discard()}, func(p Packet) { _ = q.Accept(p.ID) })
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pkt := make([]byte, 60)
	id := uint32(0)
	if n := testing.AllocsPerRun(1000, func() {
		id++
		k.Deliver(id, pkt)
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
	k.Flush()
	if v := k.Verdicts(); v.Accepted != uint64(id) {
		t.Errorf("%d verdicts for %d packets", v.Accepted, id)
	}
}

func BenchmarkQueuePath(b *testing.B) {
	var q *Queue
	q, k, err := OpenFake(context.Background(), Config{Num: 1, Logger: discard()}, func(p Packet) { _ = q.Accept(p.ID) })
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	pkt := make([]byte, 60)
	id := uint32(0)
	b.ReportAllocs()
	for b.Loop() {
		id++
		k.Deliver(id, pkt)
	}
}
