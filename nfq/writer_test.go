package nfq

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// The writer writes verdicts in the order they were given, all of those given before
// Close before the queue closes, and none after.
func TestWriterOrderAndClose(t *testing.T) {
	q, k, err := OpenFake(context.Background(), Config{Num: 2, Logger: discard()}, func(Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []uint32
	k.OnVerdict = func(id uint32, accept bool, _ []byte) {
		time.Sleep(20 * time.Microsecond) // a write that takes the kernel's reinjection time
		mu.Lock()
		got = append(got, id)
		mu.Unlock()
	}
	const n = verdictBacklog + 500 // more than the backlog: givers wait for places
	for id := uint32(1); id <= n; id++ {
		if err := q.Accept(id); err != nil {
			t.Fatalf("verdict %d: %v", id, err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("%d verdicts written before Close returned, want %d", len(got), n)
	}
	for i, id := range got {
		if id != uint32(i+1) {
			t.Fatalf("verdict %d written for packet %d: out of order", i, id)
		}
	}
	if err := q.Drop(n + 1); !errors.Is(err, ErrClosed) {
		t.Errorf("verdict after Close: %v, want ErrClosed", err)
	}
	q.Flush() // returns on a closed queue
	if s := q.Stats(); s.Verdicts != n || s.VerdictErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Verdicts given from several goroutines while the queue closes: each is either written
// or refused with ErrClosed, never lost, and Close does not deadlock.
func TestWriterConcurrentClose(t *testing.T) {
	q, k, err := OpenFake(context.Background(), Config{Num: 3, Logger: discard()}, func(Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				if err := q.Accept(uint32(g*10000 + i)); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if v := k.Verdicts(); int(v.Accepted)+refused != 8*2000 {
		t.Errorf("%d written + %d refused, want %d", v.Accepted, refused, 8*2000)
	}
}

// Flush waits for the verdicts given before it.
func TestWriterFlush(t *testing.T) {
	q, k, err := OpenFake(context.Background(), Config{Num: 4, Logger: discard()}, func(Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	k.OnVerdict = func(uint32, bool, []byte) { time.Sleep(time.Millisecond) }
	for id := range uint32(20) {
		_ = q.Drop(id)
	}
	q.Flush()
	if v := k.Verdicts(); v.Dropped != 20 {
		t.Errorf("after Flush: %d verdicts written, want 20", v.Dropped)
	}
}

// OnWritten sees every verdict written, after its write, in order.
func TestWriterOnWritten(t *testing.T) {
	var mu sync.Mutex
	var ids []uint32
	cfg := Config{Num: 5, Logger: discard(), OnWritten: func(id uint32) {
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
	}}
	q, k, err := OpenFake(context.Background(), cfg, func(Packet) {})
	if err != nil {
		t.Fatal(err)
	}
	k.OnVerdict = func(id uint32, _ bool, _ []byte) {
		mu.Lock()
		defer mu.Unlock()
		if len(ids) > 0 && ids[len(ids)-1] >= id {
			t.Errorf("OnWritten(%d) before the write of %d", ids[len(ids)-1], id)
		}
	}
	for id := uint32(1); id <= 50; id++ {
		_ = q.Accept(id)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 50 || ids[0] != 1 || ids[49] != 50 {
		t.Errorf("OnWritten saw %v", ids)
	}
}
