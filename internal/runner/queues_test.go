package runner

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// Two queues: each has its engine, the records reach OnRecord one at a time, the results
// add up, and the hooks balance over both queue numbers.
func TestRunTwoQueues(t *testing.T) {
	var (
		mu      sync.Mutex
		kernels []*nfq.FakeKernel
		inside  int // OnRecord calls running now
		records int
	)
	ipt := nfq.NewFake()
	var hooks []string
	h := startHotpath(t, func(o *Options) {
		o.Queues = 2
		o.IPT4 = ipt
		o.OpenQueue = func(ctx context.Context, c nfq.Config, hd nfq.Handler) (*nfq.Queue, error) {
			q, k, err := nfq.OpenFake(ctx, c, hd)
			mu.Lock()
			kernels = append(kernels, k)
			mu.Unlock()
			return q, err
		}
		ready := o.Ready
		o.Ready = func() { hooks = ipt.Rules(); ready() }
		o.OnRecord = func(rules.Record) {
			mu.Lock()
			inside++
			if inside > 1 {
				t.Error("OnRecord called concurrently")
			}
			records++
			mu.Unlock()
			mu.Lock()
			inside--
			mu.Unlock()
		}
	})
	if len(kernels) != 2 {
		t.Fatalf("%d queues opened, want 2", len(kernels))
	}
	if !strings.Contains(strings.Join(hooks, "\n"), "--queue-balance 7400:7401") {
		t.Errorf("hooks do not balance over queues 7400 and 7401:\n%s", strings.Join(hooks, "\n"))
	}
	// The same connection on both queues' engines, from two goroutines at once: each
	// engine tracks it on its own (in real life --queue-balance never splits one).
	var wg sync.WaitGroup
	for i, k := range kernels {
		wg.Go(func() {
			hp := &hotpath{k: k, buf: make([]byte, 140)}
			cs, ss := hp.handshake(uint16(40000 + i))
			for range 200 {
				hp.send(hpClient, hpServer, uint16(40000+i), 8080, cs, ss, tPSH|tACK, 100)
				cs += 100
			}
			hp.send(hpClient, hpServer, uint16(40000+i), 8080, cs, ss, tFIN|tACK, 0)
		})
	}
	wg.Wait()
	res := h.stop()
	if res.Queue.Received != 2*204 || res.Queue.Verdicts != 2*204 || res.Queue.VerdictLatency.Count != 2*204 {
		t.Errorf("queue stats %+v, want 408 of each", res.Queue)
	}
	if c := res.Counters; len(c) != 3 || c[0].Matched != 4 || c[0].Passed != 4 || c[1].Passed != 2 {
		t.Errorf("counters %+v, want both engines' added up", c)
	}
	if records != 2*204 {
		t.Errorf("%d records, want 408", records)
	}
	if res.Kernel == nil || res.Kernel.IDSequence != 2*204 {
		t.Errorf("kernel stats %+v", res.Kernel)
	}
}

func TestQueueCountFallsBack(t *testing.T) {
	cfg, err := rules.Parse([]byte(hotpathConfig), "hotpath.toml")
	if err != nil {
		t.Fatal(err)
	}
	limited, err := rules.Parse([]byte(hotpathConfig+"\n[[rule]]\nname = \"once\"\nhas_flags = \"ACK\"\nglobal_limit = 1\naction = \"drop\"\n"), "limited.toml")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	spec := HookSpec(cfg)
	for _, tc := range []struct {
		name string
		o    Options
		cfg  *rules.Config
		want int
		why  string
	}{
		{"default", Options{}, cfg, 1, ""},
		{"two", Options{Queues: 2}, cfg, 2, ""},
		{"global limit", Options{Queues: 2}, limited, 1, "rule once counts or draws"},
		{"capture", Options{Queues: 2, PcapPath: "x.pcapng"}, cfg, 1, "capture pairs"},
	} {
		buf.Reset()
		if got := queueCount(tc.o, tc.cfg, spec, log); got != tc.want || !strings.Contains(buf.String(), tc.why) {
			t.Errorf("%s: %d queues (log %q), want %d and %q", tc.name, got, buf.String(), tc.want, tc.why)
		}
	}
	spec.Queue = 65535
	if got := queueCount(Options{Queues: 2}, cfg, spec, log); got != 1 {
		t.Errorf("queue 65535: %d queues, want 1", got)
	}
}
