package main

// The finproxy helper: `finproxy run`'s pipeline (internal/runner.Run, as the command calls
// it) in the router namespace, with observation of the client's and the server's
// namespaces, printing "ready" once the hooks are installed and a JSON summary at exit.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
)

// proxyResult is what the finproxy helper prints at exit.
type proxyResult struct {
	Queue       nfq.Stats             `json:"queue"`
	Kernel      *nfq.KernelQueueStats `json:"kernel,omitempty"`
	Counters    []rules.Counters      `json:"counters"`
	Undecodable uint64                `json:"undecodable"`
	Observed    bool                  `json:"observed"`
	ObsConns    int                   `json:"observed_connections"`
	ObsStats    *observe.Stats        `json:"observe_stats,omitempty"`
	ObsWarnings []string              `json:"observe_warnings,omitempty"`
	// Delay accuracy: for each delayed segment, the time from its receipt to the return of
	// its verdict minus the configured delay.
	DelayErrors []time.Duration `json:"delay_errors_ns,omitempty"`
	// Go heap at exit (after the run's teardown), and the heap allocations of the whole
	// process over the run.
	HeapInuse uint64 `json:"heap_inuse"`
	Mallocs   uint64 `json:"mallocs"`
	Error     string `json:"error,omitempty"`
}

func proxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	cfgPath := fs.String("config", "", "scenario config")
	observeNS := fs.String("observe-netns", "", "comma-separated namespaces for sock_diag; empty: no observation")
	delay := fs.Duration("delay", 0, "the configured delay of the config's delay rule (delay accuracy)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run")
	heapprofile := fs.String("heapprofile", "", "write a heap profile here on SIGUSR1")
	nice := fs.Int("nice", runner.DefaultNice, "nice value of the run's threads, as finproxy run's --nice")
	queues := fs.Int("queues", 1, "NFQUEUE queues (only 1: the multi-queue runner is not in this build)")
	_ = fs.Parse(args)
	if *queues != 1 {
		return fmt.Errorf("-queues %d: only one queue in this build (the multi-queue runner was taken out until its regression is understood)", *queues)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *heapprofile != "" {
		// Sampled finely: the profile must add up the live heap, not estimate it from a
		// few dozen samples.
		runtime.MemProfileRate = 4096
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			for range usr1 {
				// The runtime's figures as they are (before the profile's GC) beside it:
				// what of the RSS is heap in use, heap free but not returned, stacks.
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if b, err := json.Marshal(ms); err == nil {
					_ = os.WriteFile(*heapprofile+".memstats.json", b, 0o644)
				}
				if f, err := os.Create(*heapprofile); err == nil {
					runtime.GC()
					_ = pprof.WriteHeapProfile(f)
					f.Close()
					fmt.Println("heap profile written")
				}
			}
		}()
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if err := runner.SetNice(*nice); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var (
		mu     sync.Mutex
		delays []time.Duration
	)
	opts := runner.Options{
		Config: &cfg.Config,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Ready:  func() { fmt.Println("ready") },
	}
	if *observeNS != "" {
		opts.Observe = &runner.ObserveOptions{NetNS: strings.Split(*observeNS, ","), Nice: runner.ObserverNice(*nice)}
	}
	if *delay > 0 {
		// A delayed segment leaves when its verdict's write returns: OnRecord (after the
		// verdict was given) gives the receipt time (r.Time), OnVerdictWritten the write's
		// end; either may come first.
		receipts := map[uint32]int64{} // delayed packets whose write has not been seen
		written := map[uint32]int64{}  // writes of packets not yet known as delayed
		opts.OnRecord = func(r rules.Record) {
			mu.Lock()
			defer mu.Unlock()
			if r.Action != "delay" {
				delete(written, r.ID)
				return
			}
			if at, ok := written[r.ID]; ok {
				delete(written, r.ID)
				delays = append(delays, time.Duration(at-r.Time)-*delay)
				return
			}
			receipts[r.ID] = r.Time
		}
		opts.OnVerdictWritten = func(id uint32) {
			now := time.Now().UnixNano()
			mu.Lock()
			defer mu.Unlock()
			if rt, ok := receipts[id]; ok {
				delete(receipts, id)
				delays = append(delays, time.Duration(now-rt)-*delay)
				return
			}
			written[id] = now
		}
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	res, err := runner.Run(ctx, opts)
	out := proxyResult{}
	if err != nil {
		out.Error = err.Error()
	}
	if res != nil {
		out.Queue, out.Kernel, out.Counters, out.Undecodable = res.Queue, res.Kernel, res.Counters, res.Undecodable
		out.Observed, out.ObsWarnings = res.Observed, res.ObserveWarnings
		if o := res.Observation; o != nil {
			out.ObsConns = len(o.Connections)
			out.ObsStats = &o.Stats
		}
		res = nil
	}
	mu.Lock()
	out.DelayErrors = delays
	mu.Unlock()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out.HeapInuse = ms.HeapInuse
	out.Mallocs = ms.Mallocs - ms0.Mallocs
	return json.NewEncoder(os.Stdout).Encode(out)
}
