package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
)

// observer runs an observe.Observer for one scenario run and samples its leak detector,
// because a leaking socket must be reported while it exists, not after its process ended.
type observer struct {
	o         *observe.Observer
	cancel    context.CancelFunc
	done      chan error
	threshold time.Duration

	mu    sync.Mutex
	leaks map[string]observe.Leak
}

// runFilter selects the sockets of a run: the server's address and port.
func runFilter(t *lab.Topology, s Spec) observe.Filter {
	server := t.ServerAddr
	if s.Addr6 {
		server = t.ServerAddr6
	}
	return observe.Filter{Ports: []uint16{s.Port}, Addrs: []netip.Prefix{netip.PrefixFrom(server, server.BitLen())}}
}

func startObserver(ctx context.Context, t *lab.Topology, s Spec) (*observer, error) {
	o, err := observe.New(observe.Options{
		Filter: runFilter(t, s),
		NetNSs: []string{t.Client, t.Server},
		Logger: s.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ob := &observer{o: o, cancel: cancel, done: make(chan error, 1), threshold: s.LeakThreshold, leaks: map[string]observe.Leak{}}
	go func() { ob.done <- o.Run(octx) }()
	if ob.threshold > 0 {
		go ob.sampleLeaks(octx)
	}
	// Make sure the sources are reading before the applications start.
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := o.Sync(sctx); err != nil {
		ob.cancel()
		<-ob.done
		_ = o.Close()
		return nil, fmt.Errorf("observe: not ready: %w", err)
	}
	return ob, nil
}

func (ob *observer) sampleLeaks(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, l := range ob.o.Leaks(ob.threshold) {
			key := l.Local.String() + "|" + l.Remote.String()
			ob.mu.Lock()
			if prev, ok := ob.leaks[key]; !ok || l.Age > prev.Age || (prev.Owner == nil && l.Owner != nil) {
				ob.leaks[key] = l
			}
			ob.mu.Unlock()
		}
	}
}

// finish waits until everything that happened is applied, then stops the observer and
// returns what it saw.
func (ob *observer) finish(ctx context.Context) (*observe.Report, []observe.Leak, []string) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	var warnings []string
	if err := ob.o.Sync(sctx); err != nil {
		warnings = append(warnings, fmt.Sprintf("observe: last sync: %v", err))
	}
	rep := ob.o.Snapshot()
	ob.cancel()
	if err := <-ob.done; err != nil && ctx.Err() == nil {
		warnings = append(warnings, fmt.Sprintf("observe: %v", err))
	}
	if err := ob.o.Close(); err != nil {
		warnings = append(warnings, fmt.Sprintf("observe: close: %v", err))
	}
	warnings = append(warnings, ob.o.Warnings()...)
	ob.mu.Lock()
	defer ob.mu.Unlock()
	leaks := make([]observe.Leak, 0, len(ob.leaks))
	for _, l := range ob.leaks {
		leaks = append(leaks, l)
	}
	return &rep, leaks, warnings
}
