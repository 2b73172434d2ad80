package nfq

import "sync/atomic"

// Batched verdicts. The kernel's NFQNL_MSG_VERDICT_BATCH gives one verdict to every packet
// of the queue whose id is not after the id it names (the queue is a list in id order), in
// one write. The writer may use it for a run of accepts only when no other packet up to
// that id still waits in the kernel: one held or delayed by a rule, or one whose verdict
// the engine has not given yet. pending says which ids those are.
//
// Packet ids are given by the kernel in sequence, one per packet it queues; an id whose
// packet it did not queue (the socket was full) is skipped and never reaches the reader.
// The reader sets an id's bit when it receives the packet, the writer clears it once the
// verdict is written; low is the lowest id that may still be set. The bits are a ring: an
// id more than pendingSpan after low would share low's bit, so once the reader gets that
// far ahead of a packet still waiting (a hold over tens of thousands of packets), batching
// is off for good and every verdict is written alone, as without batching.

const (
	pendingBits = 1 << 16
	pendingSpan = pendingBits / 2
	// maxBatch bounds the verdicts the writer takes from its channel at once.
	maxBatch = 256
)

type pending struct {
	words [pendingBits / 64]atomic.Uint64
	first atomic.Uint32 // the first id received, plus 1 (0: none yet)
	last  atomic.Uint32 // the latest id received
	// Writer's own.
	low uint32
	off atomic.Bool // the span was exceeded: no more batches
}

func (p *pending) bit(id uint32) (*atomic.Uint64, uint64) {
	i := id % pendingBits
	return &p.words[i/64], 1 << (i % 64)
}

// received marks id as waiting (reader).
func (p *pending) received(id uint32) {
	if p.first.Load() == 0 {
		p.first.Store(id + 1)
	}
	w, m := p.bit(id)
	w.Or(m)
	p.last.Store(id)
}

// waiting reports whether id's packet was received and has no verdict written yet.
func (p *pending) waiting(id uint32) bool {
	w, m := p.bit(id)
	return w.Load()&m != 0
}

// written clears id (writer).
func (p *pending) written(id uint32) {
	w, m := p.bit(id)
	w.And(^m)
}

// advance moves low past the ids that no longer wait (writer), and turns batching off if
// the reader got too far ahead of a waiting packet.
func (p *pending) advance() {
	f := p.first.Load()
	if f == 0 || p.off.Load() {
		return
	}
	if p.low == 0 {
		p.low = f - 1
	}
	last := p.last.Load()
	for int32(last-p.low) >= 0 && !p.waiting(p.low) {
		p.low++
	}
	if int32(last-p.low) >= pendingSpan {
		p.off.Store(true)
	}
}

// canBatch reports whether ids (strictly increasing, each received and waiting) are all
// that waits up to their last one (writer): then one batch verdict for the last id gives
// exactly these packets their verdict.
func (p *pending) canBatch(ids []uint32) bool {
	if len(ids) < 2 || p.off.Load() || p.first.Load() == 0 {
		return false
	}
	p.advance()
	if p.off.Load() {
		return false
	}
	last := ids[len(ids)-1]
	if int32(last-p.low) >= pendingSpan || int32(last-p.low) < 0 {
		return false
	}
	j := 0
	for id := p.low; id != last+1; id++ {
		if j < len(ids) && ids[j] == id {
			j++
			continue
		}
		if p.waiting(id) {
			return false
		}
	}
	return j == len(ids)
}
