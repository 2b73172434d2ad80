package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/story"
	"github.com/spf13/cobra"
)

func init() {
	extraCleanups = append(extraCleanups, observe.RemoveStaleInstances)
}

// observeNetnsUsage documents --observe-netns for run and watch.
const observeNetnsUsage = "network namespaces (`NS`: ip netns names or paths, comma-separated or repeated) where sock_diag looks for the applications' sockets: TIME_WAIT, timers, owners, queues (default: the namespace finproxy runs in)"

// checkNamespaces verifies that each namespace exists: a name under /run/netns (as `ip
// netns` lists it) or a path such as /proc/PID/ns/net.
func checkNamespaces(flag string, nss []string) error {
	for _, ns := range nss {
		if ns == "" {
			return fmt.Errorf("%s: empty namespace name", flag)
		}
		p := ns
		if !strings.ContainsRune(p, '/') {
			p = filepath.Join("/run/netns", p)
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s %s: no such network namespace (see `ip netns list`)", flag, ns)
		}
	}
	return nil
}

// runObserveFlags are run's observation flags.
type runObserveFlags struct {
	netns  []string
	off    bool
	report string
}

func (f *runObserveFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.netns, "observe-netns", nil, observeNetnsUsage)
	cmd.Flags().BoolVar(&f.off, "no-observe", false, "do not observe the applications' sockets (no tracepoints, no sock_diag, no timelines)")
	cmd.Flags().StringVar(&f.report, "report", "", "write one JSON document at exit: config, counters, queue, and every connection's timeline with the segments and verdicts interleaved")
}

// options checks the flags and gives the runner's observation options (nil: off).
func (f *runObserveFlags) options() (*runner.ObserveOptions, error) {
	if f.off {
		if len(f.netns) > 0 {
			return nil, fmt.Errorf("--observe-netns and --no-observe together")
		}
		return nil, nil
	}
	return &runner.ObserveOptions{NetNS: f.netns}, nil // they exist: checkSharedFlags
}

// finish prints the observed timelines after the summary and writes the report.
func (f *runObserveFlags) finish(w io.Writer, cfg *rules.Config, res *runner.Result) error {
	if res.Observed {
		printObservation(w, cfg, res, len(f.netns) > 0)
	}
	if f.report == "" {
		return nil
	}
	return runner.WriteReport(f.report, runner.NewReport(cfg, res))
}

// printObservation prints what the observation saw: its problems, then the timelines of
// the notable connections.
func printObservation(w io.Writer, cfg *rules.Config, res *runner.Result, netnsGiven bool) {
	rep := res.Observation
	if rep == nil {
		fmt.Fprintf(w, "observation: off (%s)\n", strings.Join(res.ObserveWarnings, "; "))
		return
	}
	fmt.Fprintln(w)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(w, "observation: %s\n", warn)
	}
	if s := rep.Summary; s != nil {
		fmt.Fprintf(w, "observation: %d connection(s) kept in detail, %d older finished one(s) only counted (first seen %s to %s): %d retransmission(s), %d reset(s) sent, %d received, %d TIME_WAIT restart(s)\n",
			len(rep.Connections), s.Connections, s.Oldest.Format("15:04:05"), s.Newest.Format("15:04:05"),
			s.Retransmits, s.ResetsSent, s.ResetsReceived, s.TimewaitRestarts)
	}
	if rep.Stats.LostEvents > 0 {
		fmt.Fprintf(w, "WARNING: the kernel's trace buffer lost %d events: timelines may miss states\n", rep.Stats.LostEvents)
	}
	if len(rep.Connections) > 0 && !netnsGiven && hookOf(cfg) == rules.HookForward {
		fmt.Fprintln(w, "note: sock_diag looked in finproxy's own namespace, but with the forward hook the applications run elsewhere: give --observe-netns CLIENT_NS,SERVER_NS to see TIME_WAIT, timers and owners")
	}
	story.WriteTimelines(w, rep.Connections, story.TimelineOptions{})
}
