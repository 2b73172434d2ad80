package nfq

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Verdict latency: how long a packet stays in finproxy, from the moment the reader has it
// (after the receive from the netlink socket, before the Handler runs) to the moment its
// verdict is written (and, separately, to the moment that write returned). The kernel attaches no timestamp to queued TCP packets (see
// doc.go), so the time the packet waited in the kernel queue and in the socket buffer
// before the read is not in it.
//
// The receipt time of each packet is kept in a ring indexed by packet id (the kernel gives
// ids in sequence): a verdict finds its packet's slot unless more than ringSize later
// packets were queued meanwhile (a long hold), and is then not counted.

const (
	ringSize = 1 << 13 // receipt times remembered, by packet id
	subBits  = 4       // 16 buckets per power of two: at most 6.25% above the value
	subCount = 1 << subBits
	// nBuckets covers 0 to 2^40 ns (18 minutes); longer values land in the last bucket.
	nBuckets = (40 - subBits + 1) * subCount
)

type receipt struct {
	id atomic.Uint32
	at atomic.Int64 // ns since Queue.base; 0: no packet
}

// latency is a histogram of durations with relative buckets; safe for concurrent use,
// without allocation.
type latency struct {
	counts [nBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

// bucketOf returns the bucket of v ns: values below 16 ns have one bucket each, above
// that 16 buckets per power of two.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // shift that leaves subBits+1 significant bits
	i := (e+1)*subCount + int(v>>e)&(subCount-1)
	return min(i, nBuckets-1)
}

// bucketMax is the largest value bucket i holds.
func bucketMax(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := i/subCount - 1
	lo := uint64(subCount+i%subCount) << e
	return lo + (uint64(1) << e) - 1
}

func (l *latency) add(d time.Duration) {
	v := max(int64(d), 0)
	l.counts[bucketOf(uint64(v))].Add(1)
	l.n.Add(1)
	for {
		m := l.max.Load()
		if v <= m || l.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// LatencySummary summarizes a latency histogram. The quantiles are bucket upper bounds:
// at most 6.25% above the true value (and never above Max).
type LatencySummary struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

func (l *latency) summary() LatencySummary {
	var c [nBuckets]uint64
	var n uint64
	for i := range c {
		c[i] = l.counts[i].Load()
		n += c[i]
	}
	s := LatencySummary{Count: n, Max: time.Duration(l.max.Load())}
	if n == 0 {
		return s
	}
	q := func(f float64) time.Duration {
		rank := uint64(f*float64(n-1)) + 1 // 1-based rank of the quantile
		var seen uint64
		for i, k := range c {
			seen += k
			if seen >= rank {
				return min(time.Duration(bucketMax(i)), s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P90, s.P99, s.P999 = q(0.50), q(0.90), q(0.99), q(0.999)
	return s
}

// mergeFrom adds the counts of o to l.
func (l *latency) mergeFrom(o *latency) {
	for i := range l.counts {
		if c := o.counts[i].Load(); c != 0 {
			l.counts[i].Add(c)
		}
	}
	l.n.Add(o.n.Load())
	if m := o.max.Load(); m > l.max.Load() {
		l.max.Store(m)
	}
}

// SumStats returns the counters of several queues added up, with their latency
// histograms merged (the quantiles are those of all their verdicts together).
func SumStats(qs ...*Queue) Stats {
	var s Stats
	lat, done, decided := new(latency), new(latency), new(latency)
	for _, q := range qs {
		s.Received += q.received.Load()
		s.Verdicts += q.verdicts.Load()
		s.ENOBUFS += q.enobufs.Load()
		s.ENOENT += q.enoent.Load()
		s.VerdictErrors += q.verdictErrors.Load()
		s.ReadErrors += q.readErrors.Load()
		s.Batches += q.batches.Load()
		s.Batched += q.batched.Load()
		lat.mergeFrom(&q.latency)
		done.mergeFrom(&q.doneLatency)
		decided.mergeFrom(&q.decided)
	}
	s.DecisionLatency, s.VerdictLatency, s.VerdictDoneLatency = decided.summary(), lat.summary(), done.summary()
	return s
}
