package nfq

import (
	"context"
	"slices"
	"sync"
	"time"
)

// FakeKernel stands in for the kernel behind a Queue opened with OpenFake, for tests and
// benchmarks of whatever sits on a queue (here and in other packages): Deliver hands the
// Queue a packet as go-nfqueue would, and the verdicts the Queue gives are counted (and
// shown to OnVerdict). Nothing allocates per packet.
type FakeKernel struct {
	q    *Queue
	dmu  sync.Mutex // one Deliver at a time, as the kernel's messages come one at a time
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	fv      FakeVerdicts
	waiting []uint32 // delivered ids without a verdict, in delivery order
	// OnVerdict, when set before the first Deliver, sees every verdict: the packet id,
	// accept or drop, and the replacement packet (nil if none; valid during the call only).
	OnVerdict func(id uint32, accept bool, data []byte)
}

// FakeVerdicts counts the verdicts a FakeKernel received.
type FakeVerdicts struct {
	Accepted, Dropped, Modified uint64
	// Batches counts the batch verdicts (each accepted every waiting packet up to its id;
	// those are counted in Accepted).
	Batches    uint64
	LastID     uint32
	LastAccept bool
}

// OpenFake opens a Queue whose kernel is a FakeKernel: the same Handler calls, counters,
// verdict latency and verdict methods as Open, without a socket.
func OpenFake(ctx context.Context, cfg Config, h Handler) (*Queue, *FakeKernel, error) {
	q, err := newQueue(ctx, cfg, h)
	if err != nil {
		return nil, nil, err
	}
	k := &FakeKernel{q: q, done: make(chan struct{})}
	q.fake = k
	q.start(ctx)
	return q, k, nil
}

// Deliver queues packet id with data (an IP packet) and returns once the Queue's Handler
// has returned for it (its verdict may come later). It returns false if the Queue is closed.
func (k *FakeKernel) Deliver(id uint32, data []byte) bool {
	k.dmu.Lock()
	defer k.dmu.Unlock()
	select {
	case <-k.done:
		return false
	default:
	}
	k.mu.Lock()
	k.waiting = append(k.waiting, id)
	k.mu.Unlock()
	k.q.deliver(Packet{ID: id, Time: time.Now(), Data: data, OrigLen: len(data)}, false)
	return true
}

// Waiting returns the ids of the delivered packets that have no verdict yet, in delivery
// order.
func (k *FakeKernel) Waiting() []uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]uint32(nil), k.waiting...)
}

// Flush returns once the verdicts given so far have reached the FakeKernel (the Queue
// writes them from a goroutine of its own, as it does to the kernel).
func (k *FakeKernel) Flush() { k.q.Flush() }

// Verdicts returns the counts of verdicts received so far.
func (k *FakeKernel) Verdicts() FakeVerdicts {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fv
}

func (k *FakeKernel) verdict(id uint32, accept bool, data []byte) error {
	k.mu.Lock()
	switch {
	case accept && data != nil:
		k.fv.Modified++
		k.fv.Accepted++
	case accept:
		k.fv.Accepted++
	default:
		k.fv.Dropped++
	}
	k.fv.LastID, k.fv.LastAccept = id, accept
	if i := slices.Index(k.waiting, id); i >= 0 {
		k.waiting = slices.Delete(k.waiting, i, i+1)
	}
	k.mu.Unlock()
	if k.OnVerdict != nil {
		k.OnVerdict(id, accept, data)
	}
	return nil
}

// batch is NFQNL_MSG_VERDICT_BATCH with NF_ACCEPT: every waiting packet from the head of
// the list up to the first one after id is accepted.
func (k *FakeKernel) batch(id uint32) error {
	k.mu.Lock()
	n := 0
	for n < len(k.waiting) && int32(k.waiting[n]-id) <= 0 {
		n++
	}
	var buf [maxBatch]uint32
	got := buf[:0]
	if n <= len(buf) {
		got = append(got, k.waiting[:n]...)
	} else {
		got = append([]uint32(nil), k.waiting[:n]...)
	}
	k.waiting = slices.Delete(k.waiting, 0, n)
	k.fv.Batches++
	k.fv.Accepted += uint64(n)
	if n > 0 {
		k.fv.LastID, k.fv.LastAccept = got[n-1], true
	}
	k.mu.Unlock()
	if k.OnVerdict != nil {
		for _, id := range got {
			k.OnVerdict(id, true, nil)
		}
	}
	return nil
}

func (k *FakeKernel) close() { k.once.Do(func() { close(k.done) }) }
