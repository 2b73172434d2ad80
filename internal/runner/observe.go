package runner

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/story"
)

// ObserveOptions configure the observation that runs alongside the engine.
type ObserveOptions struct {
	// NetNS are the network namespaces where sock_diag looks for the applications'
	// sockets, as observe.Options.NetNSs takes them (`ip netns` names or paths). Empty:
	// the namespace finproxy runs in (right for the local hook; for the forward hook give
	// the client's and the server's namespaces, or TIME_WAIT and the owners stay unknown).
	NetNS []string
	// PollInterval is the sock_diag period (observe's default if zero).
	PollInterval time.Duration
	// Nice is the nice value of the observer's threads (observe.Options.Nice); nil: the
	// process's. ObserverNice gives the one run and serve use.
	Nice *int
}

// ObserverNice is the observer's nice value for a process at nice: the applications'
// (0), not the packet path's, unless the process itself runs below them. Watching the
// applications must not take their CPU first: at -10 with the packet path, the
// observer's polls and trace reading cut the benchmark's connection churn by a third.
func ObserverNice(nice int) *int {
	n := max(nice, 0)
	return &n
}

// observation is an Observer running for one run.
type observation struct {
	o      *observe.Observer
	cancel context.CancelFunc
	done   chan error
	warns  []string
}

// startObservation starts an Observer filtered by the config's target. It never fails:
// when no source starts it returns an observation without an Observer that carries the
// reason.
func startObservation(ctx context.Context, cfg *rules.Config, oo *ObserveOptions, log *slog.Logger) *observation {
	f := observe.Filter{Addrs: cfg.Target.Addresses}
	if cfg.Target.Port != 0 {
		f.Ports = append([]uint16{cfg.Target.Port}, cfg.Target.Ports...)
	}
	o, err := observe.New(observe.Options{Filter: f, NetNSs: oo.NetNS, PollInterval: oo.PollInterval, Nice: oo.Nice})
	if err != nil {
		msg := fmt.Sprintf("observation off: %v", err)
		log.Warn(msg)
		return &observation{warns: []string{msg}}
	}
	for _, w := range o.Warnings() {
		log.Warn("observation: " + w)
	}
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ob := &observation{o: o, cancel: cancel, done: make(chan error, 1)}
	go func() { ob.done <- o.Run(octx) }()
	return ob
}

// annotate puts a segment's record on the timeline of its connection, on the Observer's
// clock. Record times are Unix nanoseconds of the wall clock; they are taken back to
// time.Now()'s monotonic reading through the verdict, which was given just now.
func (ob *observation) annotate(r rules.Record) {
	if ob.o == nil {
		return
	}
	now := time.Now()
	at := now.Add(time.Duration(r.Time - now.UnixNano()))
	src, dst := r.Client, r.Server
	if r.Side == rules.Server {
		src, dst = dst, src
	}
	ob.o.AnnotateRecord(at, src, dst, &r)
}

// finish waits (a little) until the sources caught up, takes the report and stops the
// Observer.
func (ob *observation) finish(log *slog.Logger) (*observe.Report, []string) {
	if ob.o == nil {
		return nil, ob.warns
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := ob.o.Sync(ctx); err != nil {
		log.Warn("observation: not every event was read before the end", "err", err)
	}
	cancel()
	rep := ob.o.Snapshot()
	noteTexts(rep.Connections)
	ob.cancel()
	if err := <-ob.done; err != nil {
		msg := fmt.Sprintf("observation: %v", err)
		log.Warn(msg)
		rep.Warnings = append(rep.Warnings, msg)
	}
	return &rep, rep.Warnings
}

// noteTexts writes the text of the segments' notes, which annotate leaves empty: the
// queued segments' path does not pay for the formatting, the report does.
func noteTexts(conns []observe.Connection) {
	for i := range conns {
		for j := range conns[i].Notes {
			if n := &conns[i].Notes[j]; n.Record != nil && n.Text == "" {
				n.Text = story.RecordText(*n.Record)
			}
		}
	}
}
