package nfq

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 20, 123456789, 1 << 39, 1<<40 - 1} {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucket of %d is %d, below the previous %d", v, i, prev)
		}
		prev = i
		if hi := bucketMax(i); v > hi || (i > 0 && v <= bucketMax(i-1)) {
			t.Errorf("%d in bucket %d holding (%d, %d]", v, i, bucketMax(i-1), hi)
		}
		if hi := bucketMax(i); v >= subCount && float64(hi) > float64(v)*1.0625 {
			t.Errorf("bucket of %d reaches %d: more than 6.25%% above", v, hi)
		}
	}
	for i := 1; i < nBuckets; i++ {
		if bucketMax(i) <= bucketMax(i-1) || bucketOf(bucketMax(i)) != i || bucketOf(bucketMax(i-1)+1) != i {
			t.Fatalf("bucket %d: max %d, previous max %d", i, bucketMax(i), bucketMax(i-1))
		}
	}
}

func TestLatencySummary(t *testing.T) {
	var l latency
	if s := l.summary(); s != (LatencySummary{}) {
		t.Errorf("empty: %+v", s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var vals []time.Duration
	for range 10000 {
		d := time.Duration(r.ExpFloat64() * float64(20*time.Microsecond))
		vals = append(vals, d)
		l.add(d)
	}
	slices.Sort(vals)
	s := l.summary()
	if s.Count != 10000 || s.Max != vals[len(vals)-1] {
		t.Fatalf("count %d max %v, want 10000 and %v", s.Count, s.Max, vals[len(vals)-1])
	}
	for _, c := range []struct {
		got time.Duration
		q   float64
	}{{s.P50, 0.5}, {s.P90, 0.9}, {s.P99, 0.99}, {s.P999, 0.999}} {
		want := vals[int(c.q*float64(len(vals)-1))]
		if c.got < want || float64(c.got) > float64(want)*1.07 {
			t.Errorf("p%v = %v, exact %v", c.q*100, c.got, want)
		}
	}
}

func TestLatencyAddAllocs(t *testing.T) {
	var q Queue
	q.base = time.Now()
	id := uint32(0)
	if n := testing.AllocsPerRun(1000, func() {
		id++
		q.received1(id, time.Now())
		q.verdictSent(id, time.Since(q.base), time.Since(q.base))
	}); n != 0 {
		t.Errorf("%v allocations per receipt and verdict", n)
	}
	if s := q.latency.summary(); s.Count == 0 {
		t.Error("nothing counted")
	}
	q.verdictSent(id, time.Since(q.base), time.Since(q.base)) // a second verdict for the same id is not counted
	q.verdictSent(id+ringSize, time.Since(q.base), time.Since(q.base))
	if s, d := q.latency.summary(), q.doneLatency.summary(); s.Count != 1001 || d.Count != 1001 || d.P50 < s.P50 {
		t.Errorf("counts %d and %d, want 1001 (AllocsPerRun's warm-up run included); p50 %v and %v", s.Count, d.Count, s.P50, d.P50)
	}
}

func TestSumStats(t *testing.T) {
	var a, b Queue
	for i, q := range []*Queue{&a, &b} {
		q.received.Add(uint64(10 * (i + 1)))
		q.verdicts.Add(uint64(10 * (i + 1)))
		q.enoent.Add(1)
		for k := range 10 * (i + 1) {
			q.latency.add(time.Duration(1000 * (i*100 + k + 1)))
			q.doneLatency.add(time.Duration(2000 * (i*100 + k + 1)))
		}
	}
	s := SumStats(&a, &b)
	if s.Received != 30 || s.Verdicts != 30 || s.ENOENT != 2 || s.VerdictLatency.Count != 30 || s.VerdictDoneLatency.Count != 30 {
		t.Errorf("sum %+v", s)
	}
	if s.VerdictLatency.Max != 120*time.Microsecond || s.VerdictLatency.P50 < 100*time.Microsecond {
		t.Errorf("merged latency %+v: want the max of b and a median among b's values", s.VerdictLatency)
	}
	if one := SumStats(&a); one != a.Stats() {
		t.Errorf("SumStats of one queue %+v, its Stats %+v", one, a.Stats())
	}
}
