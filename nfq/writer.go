package nfq

import (
	"fmt"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
)

// verdictBacklog is how many verdicts may wait for the writer; a verdict given when it is
// full waits for a place (the reader then stops reading and packets wait in the kernel
// queue, as they would for a slow reader).
const verdictBacklog = 4096

// verdictReq is one verdict for the writer; flush, when set, is closed once every verdict
// before it has been written (Flush).
type verdictReq struct {
	id     uint32
	accept bool
	data   []byte
	given  time.Duration // since Queue.base
	flush  chan struct{}
}

// writer writes the verdicts, in the order they were given, until vq is closed.
//
// Writing a verdict is most of the cost of a queued packet, and not finproxy's: the kernel
// reinjects the packet within the write, and the softirq work that follows (forwarding it,
// the receiver's TCP, what that sends back through the hook) runs in the writer's thread
// before the write returns. With the writes on a goroutine of their own, the reader reads
// and the engine decides the next packets meanwhile (on another CPU): in the benchmark's
// connection churn (4 queued segments per connection) this gave 1.5 times the connections
// per second of verdicts written by the reader itself. One writer keeps the order in which
// the verdicts were given; two, one per flow hash, were slower on two CPUs.
func (q *Queue) writer() {
	defer close(q.writerDone)
	batch := make([]verdictReq, 0, maxBatch)
	ids := make([]uint32, 0, maxBatch)
	for r := range q.vq {
		// Take what else is ready, so that a run of accepts can go in one write.
		batch = append(batch[:0], r)
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-q.vq:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		for i := 0; i < len(batch); {
			r := batch[i]
			if r.flush != nil {
				close(r.flush)
				i++
				continue
			}
			// The longest run of accepts of received packets, in increasing id order.
			ids = ids[:0]
			j := i
			for j < len(batch) && batch[j].plainAccept() && q.pend.waiting(batch[j].id) &&
				(len(ids) == 0 || int32(batch[j].id-ids[len(ids)-1]) > 0) {
				ids = append(ids, batch[j].id)
				j++
			}
			if q.pend.canBatch(ids) {
				q.writeBatch(batch[i:j])
				i = j
				continue
			}
			// What keeps the run from one batch (a packet waiting below its end, outside
			// it) keeps every shorter run ending there too: write the run one by one.
			for _, r := range batch[i:max(j, i+1)] {
				q.write(r)
			}
			i = max(j, i+1)
		}
	}
}

// plainAccept: an accept without a replacement packet, which a batch verdict can give.
func (r verdictReq) plainAccept() bool { return r.flush == nil && r.accept && r.data == nil }

// writeBatch accepts rs (a run pending.canBatch allowed) with one batch verdict for the
// last id.
func (q *Queue) writeBatch(rs []verdictReq) {
	start := time.Since(q.base)
	last := rs[len(rs)-1].id
	var err error
	if q.fake != nil {
		err = q.fake.batch(last)
	} else {
		err = q.nf.SetVerdictBatch(last, nfqueue.NfAccept)
	}
	if err != nil {
		q.verdictErrors.Add(uint64(len(rs)))
		if !q.writeWarn.Swap(true) {
			q.log.Warn("nfq: writing a verdict failed (further failures are only counted in Stats.VerdictErrors)",
				"err", fmt.Errorf("nfq: accept packets up to %d on queue %d: %w", last, q.cfg.Num, err))
		}
		return
	}
	q.batches.Add(1)
	q.batched.Add(uint64(len(rs)))
	for _, r := range rs {
		q.pend.written(r.id)
		q.verdicts.Add(1)
		q.verdictSent(r.id, r.given, start)
		if q.cfg.OnWritten != nil {
			q.cfg.OnWritten(r.id)
		}
	}
}

// write sends one verdict through go-nfqueue (or to the FakeKernel).
func (q *Queue) write(r verdictReq) {
	start := time.Since(q.base)
	var err error
	switch {
	case q.fake != nil:
		err = q.fake.verdict(r.id, r.accept, r.data)
	case r.data != nil:
		err = q.nf.SetVerdictWithOption(r.id, nfqueue.NfAccept, nfqueue.WithAlteredPacket(r.data))
	case r.accept:
		err = q.nf.SetVerdict(r.id, nfqueue.NfAccept)
	default:
		err = q.nf.SetVerdict(r.id, nfqueue.NfDrop)
	}
	if err != nil {
		q.verdictErrors.Add(1)
		if !q.writeWarn.Swap(true) {
			q.log.Warn("nfq: writing a verdict failed (further failures are only counted in Stats.VerdictErrors)",
				"err", q.verdictError(r.id, r.accept, r.data, err))
		}
		return
	}
	q.pend.written(r.id)
	q.verdicts.Add(1)
	q.verdictSent(r.id, r.given, start)
	if q.cfg.OnWritten != nil {
		q.cfg.OnWritten(r.id)
	}
}

// Flush returns once every verdict given before the call has been written; on a closed
// queue, once the writer has finished. Not from a FakeKernel's OnVerdict (the writer's
// goroutine).
func (q *Queue) Flush() {
	q.vmu.RLock()
	if q.closed.Load() {
		q.vmu.RUnlock()
		<-q.writerDone
		return
	}
	done := make(chan struct{})
	q.vq <- verdictReq{flush: done}
	q.vmu.RUnlock()
	<-done
}

// stopWriter refuses new verdicts (ErrClosed), lets the writer write those already given
// and waits for it. Idempotent.
func (q *Queue) stopWriter() {
	q.vmu.Lock()
	if !q.closed.Swap(true) {
		close(q.vq)
	}
	q.vmu.Unlock()
	<-q.writerDone
}
