package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/obsmetrics"
	"github.com/finproxy/finproxy/observe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// defaultCloseWait is watch's CLOSE_WAIT leak threshold. A server normally closes within
// milliseconds of reading EOF; five seconds in CLOSE_WAIT is already far from that, and
// short enough for a CI run. Servers that keep sending after the peer's FIN (half-close)
// legitimately stay longer: raise --close-wait for them.
const defaultCloseWait = 5 * time.Second

type watchFlags struct {
	ports        []uint
	addrs        []string
	netns        string
	observeNetns []string
	closeWait    time.Duration
	failOnLeak   bool
	duration     time.Duration
	json         bool
	interval     time.Duration
	metrics      string
}

// watchConfig is watchFlags checked.
type watchConfig struct {
	watchFlags
	filter observe.Filter
}

func newWatchCmd() *cobra.Command {
	var f watchFlags
	cmd := &cobra.Command{
		Use:   "watch --port PORT",
		Short: "Show what the sockets of a port go through, live; report CLOSE_WAIT leaks",
		Long: `watch follows every TCP connection of the given ports (or addresses): each side's state,
how long it has been there, retransmissions (with the state they happened in), resets, the
timewait socket and its timer, and the process holding each socket. It reads the kernel's
tracepoints (every state change, exact) and polls sock_diag (TIME_WAIT, timers, owners,
queues) in the namespaces of --observe-netns.

On a terminal it shows a table updated in place; otherwise one line per event. --json
prints one JSON object per event, one per CLOSE_WAIT leak as it is found ("type":"leak"),
and at the end one document with the whole report ("type":"report").

A socket held in CLOSE_WAIT for --close-wait or longer (its peer closed, its application
did not) is a leak: it is printed with its 4-tuple, owner, age and queues. With
--fail-on-leak the exit status is 1 when one was found. Exit status: 0, 1 (a leak with
--fail-on-leak, or an error), 2 (bad command line).`,
		Example: `  sudo finproxy watch --port 8080
  sudo finproxy watch --port 8080 --close-wait 5s --fail-on-leak --duration 60s
  sudo finproxy watch --port 8080 --netns router --observe-netns client,server --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &exitError{2, fmt.Errorf("watch takes no arguments, got %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			wc, err := f.check()
			if err != nil {
				return &exitError{2, err}
			}
			if err := enterNetns(f.netns); err != nil {
				return err
			}
			return runWatch(cmd.Context(), wc, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.UintSliceVar(&f.ports, "port", nil, "TCP `PORT` to watch (either end of a connection); repeat or separate with commas. Required unless --addr")
	fl.StringSliceVar(&f.addrs, "addr", nil, "only connections with an end in this `PREFIX` (address or CIDR); repeat or separate with commas")
	fl.StringVar(&f.netns, "netns", "", "run inside this named network namespace (ip netns), as run does")
	fl.StringSliceVar(&f.observeNetns, "observe-netns", nil, observeNetnsUsage)
	fl.DurationVar(&f.closeWait, "close-wait", defaultCloseWait, "CLOSE_WAIT leak threshold: a socket in CLOSE_WAIT this long is reported")
	fl.BoolVar(&f.failOnLeak, "fail-on-leak", false, "exit 1 when a CLOSE_WAIT leak was found")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fl.BoolVar(&f.json, "json", false, "JSON lines on stdout: events, leaks, then the final report")
	fl.DurationVar(&f.interval, "interval", 25*time.Millisecond, "sock_diag poll interval")
	fl.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics of the observation on `ADDR` (HOST:PORT), path /metrics")
	return cmd
}

// check validates the flags.
func (f *watchFlags) check() (*watchConfig, error) {
	wc := &watchConfig{watchFlags: *f}
	if len(f.ports) == 0 && len(f.addrs) == 0 {
		return nil, fmt.Errorf("watch: give --port (or --addr)")
	}
	for _, p := range f.ports { // in range: checkSharedFlags
		wc.filter.Ports = append(wc.filter.Ports, uint16(p))
	}
	for _, a := range f.addrs {
		p, err := config.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
		wc.filter.Addrs = append(wc.filter.Addrs, p)
	}
	switch {
	case f.closeWait <= 0:
		return nil, fmt.Errorf("--close-wait %v: want a positive duration", f.closeWait)
	case f.interval <= 0:
		return nil, fmt.Errorf("--interval %v: want a positive duration", f.interval)
	}
	return wc, nil
}

// watchLeak is a leak as watch reports it: the Observer's Leak as last seen, and whether
// the socket was still in CLOSE_WAIT at the end.
type watchLeak struct {
	observe.Leak
	Open bool `json:"open"`
}

// watchReport is the final JSON document of watch --json.
type watchReport struct {
	Type string `json:"type"` // "report"
	observe.Report
	CloseWait observe.Duration `json:"close_wait_threshold"`
	Leaks     []watchLeak      `json:"leaks"`
}

// watchView shows the observation: lines, a live table or JSON.
type watchView interface {
	event(observe.Event)
	leak(observe.Leak)
	tick(observe.Report, []*watchLeak)
	finish(observe.Report, []*watchLeak)
}

func runWatch(ctx context.Context, wc *watchConfig, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "finproxy: watch: not root: the tracepoints, other namespaces and other users' processes are out of reach; trying sock_diag alone")
	}
	o, err := observe.New(observe.Options{Filter: wc.filter, NetNSs: wc.observeNetns, PollInterval: wc.interval})
	if err != nil {
		return err
	}
	for _, w := range o.Warnings() {
		fmt.Fprintf(stderr, "finproxy: watch: %s\n", w)
	}
	events := o.Events()
	var coll *obsmetrics.Collector
	if wc.metrics != "" {
		coll = obsmetrics.New(o, wc.closeWait, func() observe.Filter { return wc.filter })
		stop, err := serveMetrics(wc.metrics, coll, stderr)
		if err != nil {
			o.Close()
			return err
		}
		defer stop()
	}
	octx, ocancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ocancel()
	runErr := make(chan error, 1)
	go func() { runErr <- o.Run(octx) }()

	if wc.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wc.duration)
		defer cancel()
	}
	fmt.Fprintf(stderr, "finproxy: watching %s (%s), CLOSE_WAIT leak threshold %v\n", describeFilter(wc.filter), describeSources(o.Snapshot().Sources), wc.closeWait)

	var view watchView
	tty := false
	if f, ok := stdout.(*os.File); ok && !wc.json && term.IsTerminal(int(f.Fd())) {
		tty = true
		view = newTableView(f, wc)
	} else if wc.json {
		view = &jsonView{enc: json.NewEncoder(stdout), wc: wc}
	} else {
		view = newLineView(stdout, wc)
	}

	leaks := map[leakKey]*watchLeak{}
	var order []*watchLeak
	checkLeaks := func() { checkLeaksFrom(o.Leaks(wc.closeWait), leaks, &order, view) }
	redraw := time.NewTicker(250 * time.Millisecond)
	defer redraw.Stop()
	stopped := false
loop:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				stopped = true
				break loop
			}
			if coll != nil {
				coll.Count(ev)
			}
			view.event(ev)
		case <-redraw.C:
			checkLeaks()
			if tty {
				view.tick(o.Snapshot(), order)
			}
		case <-ctx.Done():
			break loop
		}
	}

	// The end: let the sources catch up, take the last look, stop the Observer and show
	// what it said meanwhile.
	if !stopped {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := o.Sync(sctx); err != nil {
			fmt.Fprintf(stderr, "finproxy: watch: not every event was read before the end: %v\n", err)
		}
		scancel()
	}
	final := o.Leaks(wc.closeWait)
	checkLeaksFrom(final, leaks, &order, view)
	open := map[leakKey]bool{}
	for _, l := range final {
		open[leakKey{l.Local, l.Remote, l.Since.UnixNano()}] = true
	}
	for k, wl := range leaks {
		wl.Open = open[k]
	}
	rep := o.Snapshot()
	ocancel()
	err = <-runErr
	for ev := range events {
		view.event(ev)
	}
	view.finish(rep, order)
	if err != nil {
		return err
	}
	if stopped {
		return fmt.Errorf("watch: every observation source failed: %s", strings.Join(rep.Warnings, "; "))
	}
	if wc.failOnLeak && len(order) > 0 {
		return &exitError{1, fmt.Errorf("%d CLOSE_WAIT leak(s) of %v or more", len(order), wc.closeWait)}
	}
	return nil
}

// serveMetrics serves coll's metrics on addr (/metrics) until stop.
func serveMetrics(addr string, coll prometheus.Collector, stderr io.Writer) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(coll); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	fmt.Fprintf(stderr, "finproxy: watch: metrics on http://%s/metrics\n", ln.Addr())
	return func() { hs.Close() }, nil
}

type leakKey struct {
	local, remote netip.AddrPort
	since         int64
}

// checkLeaksFrom records leaks found at the end (as checkLeaks does while running).
func checkLeaksFrom(ls []observe.Leak, leaks map[leakKey]*watchLeak, order *[]*watchLeak, view watchView) {
	for _, l := range ls {
		k := leakKey{l.Local, l.Remote, l.Since.UnixNano()}
		if wl, ok := leaks[k]; ok {
			wl.Leak = mergeLeak(wl.Leak, l)
			continue
		}
		wl := &watchLeak{Leak: l, Open: true}
		leaks[k] = wl
		*order = append(*order, wl)
		view.leak(l)
	}
}

// mergeLeak updates a leak with a later sighting, keeping an owner once known.
func mergeLeak(old, l observe.Leak) observe.Leak {
	if l.Owner == nil {
		l.Owner = old.Owner
	}
	return l
}

func describeFilter(f observe.Filter) string {
	var parts []string
	if len(f.Ports) > 0 {
		ps := make([]string, len(f.Ports))
		for i, p := range f.Ports {
			ps[i] = fmt.Sprint(p)
		}
		parts = append(parts, "port "+strings.Join(ps, ","))
	}
	if len(f.Addrs) > 0 {
		as := make([]string, len(f.Addrs))
		for i, a := range f.Addrs {
			as[i] = a.String()
		}
		parts = append(parts, "addresses "+strings.Join(as, ","))
	}
	return strings.Join(parts, ", ")
}

func describeSources(s observe.Sources) string {
	var parts []string
	if s.Trace {
		parts = append(parts, "tracepoints")
	}
	if s.Diag {
		switch {
		case len(s.NetNSs) > 0:
			parts = append(parts, "sock_diag in "+strings.Join(s.NetNSs, ", "))
		case s.NetNS != "":
			parts = append(parts, "sock_diag in "+s.NetNS)
		default:
			parts = append(parts, "sock_diag")
		}
	}
	return strings.Join(parts, " and ")
}

// jsonView prints JSON lines.
type jsonView struct {
	enc *json.Encoder
	wc  *watchConfig
}

func (v *jsonView) event(ev observe.Event) { _ = v.enc.Encode(ev) }

func (v *jsonView) leak(l observe.Leak) {
	_ = v.enc.Encode(struct {
		Type string `json:"type"`
		observe.Leak
	}{"leak", l})
}

func (v *jsonView) tick(observe.Report, []*watchLeak) {}

func (v *jsonView) finish(rep observe.Report, leaks []*watchLeak) {
	doc := watchReport{Type: "report", Report: rep, CloseWait: observe.Duration(v.wc.closeWait), Leaks: []watchLeak{}}
	for _, l := range leaks {
		doc.Leaks = append(doc.Leaks, *l)
	}
	_ = v.enc.Encode(doc)
}
