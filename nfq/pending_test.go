package nfq

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// batchQueue opens a fake queue whose Handler accepts every packet except those hold
// picks, and whose first written verdict is slow, so that the next ones pile up for
// the writer and can go in a batch.
func batchQueue(t *testing.T, hold func(id uint32) bool) (*Queue, *FakeKernel) {
	t.Helper()
	var q *Queue
	var ready atomic.Bool
	q, k, err := OpenFake(context.Background(), Config{Num: 9, Logger: discard()}, func(p Packet) {
		for !ready.Load() {
		}
		if hold != nil && hold(p.ID) {
			return
		}
		_ = q.Accept(p.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	var slow atomic.Bool
	k.OnVerdict = func(uint32, bool, []byte) {
		if !slow.Swap(true) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	ready.Store(true)
	t.Cleanup(func() { _ = q.Close() })
	return q, k
}

// Ids the kernel skipped (a packet it could not queue) do not stop batching, and every
// packet gets exactly one verdict.
func TestBatchAcrossSkippedIDs(t *testing.T) {
	q, k := batchQueue(t, nil)
	var ids []uint32
	for id := uint32(1); id <= 200; id++ {
		if id%7 == 3 {
			continue // never queued
		}
		ids = append(ids, id)
		k.Deliver(id, nil)
	}
	k.Flush()
	v, st := k.Verdicts(), q.Stats()
	if int(v.Accepted) != len(ids) || len(k.Waiting()) != 0 {
		t.Fatalf("accepted %d of %d, waiting %v", v.Accepted, len(ids), k.Waiting())
	}
	if v.Batches == 0 || st.Batches != v.Batches || st.Batched < 2*st.Batches {
		t.Errorf("kernel saw %d batches, stats %d batches of %d verdicts: want batches", v.Batches, st.Batches, st.Batched)
	}
}

// A held packet stops every batch above it; its verdict lets batching resume.
func TestBatchNeverOverHeld(t *testing.T) {
	var held atomic.Uint32
	held.Store(1)
	q, k := batchQueue(t, func(id uint32) bool { return id == held.Load() })
	for id := uint32(1); id <= 100; id++ {
		k.Deliver(id, nil)
	}
	k.Flush()
	if w := k.Waiting(); !slices.Equal(w, []uint32{1}) {
		t.Fatalf("waiting %v, want [1] (the held packet)", w)
	}
	if v := k.Verdicts(); v.Batches != 0 {
		t.Fatalf("%d batches written over a held packet", v.Batches)
	}
	_ = q.Accept(1)
	held.Store(0)
	for id := uint32(101); id <= 300; id++ {
		k.Deliver(id, nil)
	}
	k.Flush()
	if w := k.Waiting(); len(w) != 0 {
		t.Fatalf("waiting %v", w)
	}
	if v := k.Verdicts(); v.Batches == 0 || v.Accepted != 300 {
		t.Errorf("after the release: %d batches, %d accepted; want batches, 300", v.Batches, v.Accepted)
	}
}

// A packet held while more than pendingSpan later ones pass turns batching off for good:
// past that the ring cannot tell which ids wait.
func TestBatchOffAfterLongHold(t *testing.T) {
	q, k := batchQueue(t, func(id uint32) bool { return id == 1 })
	n := uint32(pendingSpan + 100)
	for id := uint32(1); id <= n; id++ {
		k.Deliver(id, nil)
	}
	k.Flush()
	_ = q.Accept(1)
	k.Flush()
	before := k.Verdicts().Batches
	for id := n + 1; id <= n+500; id++ {
		k.Deliver(id, nil)
	}
	k.Flush()
	v := k.Verdicts()
	if len(k.Waiting()) != 0 || v.Accepted != uint64(n+500) {
		t.Fatalf("waiting %d, accepted %d of %d", len(k.Waiting()), v.Accepted, n+500)
	}
	if v.Batches != before || !q.pend.off.Load() {
		t.Errorf("batches %d -> %d, off=%v: want batching off", before, v.Batches, q.pend.off.Load())
	}
}
