package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
	"github.com/spf13/cobra"
)

type targetFlags struct {
	port  uint // 0 or 1 to 65535, as for every command: checkSharedFlags
	hook  string
	queue uint
	netns string
}

func (f *targetFlags) add(cmd *cobra.Command) {
	cmd.Flags().UintVar(&f.port, "port", 0, "override the config's target port")
	cmd.Flags().StringVar(&f.hook, "hook", "", "override the config's hook mode: local or forward")
	cmd.Flags().UintVar(&f.queue, "queue", 0, "override the config's NFQUEUE number")
	cmd.Flags().StringVar(&f.netns, "netns", "", "do all the work inside this named network namespace (ip netns)")
}

// apply puts the command-line overrides into cfg and validates the result.
func (f *targetFlags) apply(cfg *rules.Config) error {
	if f.port != 0 {
		cfg.Target.Port, cfg.Target.Ports = uint16(f.port), nil
	}
	switch f.hook {
	case "":
	case "local":
		cfg.Target.Hook = rules.HookLocal
	case "forward":
		cfg.Target.Hook = rules.HookForward
	default:
		return fmt.Errorf("--hook %q: want local or forward", f.hook)
	}
	if f.queue != 0 {
		cfg.Target.Queue = uint16(f.queue)
	}
	if cfg.Target.Port == 0 && len(cfg.Target.Addresses) == 0 {
		return fmt.Errorf("%s: no target scope: give target.port or target.address in the config, or --port", cfg.File)
	}
	return nil
}

func newRunCmd() *cobra.Command {
	var (
		tf       targetFlags
		of       runObserveFlags
		cfgPath  string
		logPath  string
		pcapPath string
		duration time.Duration
		stack    bool
		nice     int
	)
	cmd := &cobra.Command{
		Use:   "run -c CONFIG",
		Short: "Inject the config's faults until Ctrl-C (or --duration)",
		Example: `  sudo finproxy run -c configs/lost-final-ack.toml
  sudo finproxy run -c configs/lost-fin.toml --port 6379 --netns app --duration 30s --log events.jsonl --pcap capture.pcapng
  sudo finproxy run -c lost-final-ack --hook forward --netns router --observe-netns client,server --report run.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			surviveClosedOutput()
			if cfgPath == "" {
				return &exitError{2, fmt.Errorf("run: -c CONFIG is required")}
			}
			if cfgPath == stdinArg && tf.netns != "" {
				return &exitError{2, fmt.Errorf("run: -c - and --netns: finproxy re-executes itself in the namespace and would read stdin a second time: give the config as a file")}
			}
			loaded, err := loadConfig(cmd.Context(), cfgPath, cmd.InOrStdin())
			if err != nil {
				return &exitError{2, err}
			}
			cfg := &loaded.Config
			if err := tf.apply(cfg); err != nil {
				return &exitError{2, err}
			}
			observeOpts, err := of.options()
			if err != nil {
				return &exitError{2, err}
			}
			if err := checkOutputFiles([2]string{"--log", logPath}, [2]string{"--pcap", pcapPath}, [2]string{"--report", of.report}); err != nil {
				return &exitError{2, err}
			}
			if err := enterNetns(tf.netns); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("run needs root (NFQUEUE and iptables): try sudo")
			}
			applyNice(slog.Default(), nice)
			if observeOpts != nil {
				observeOpts.Nice = runner.ObserverNice(nice)
			}
			// Before anything is hooked: from here on, however finproxy ends, its hooks go.
			if err := startWatchdog(slog.Default()); err != nil {
				return fmt.Errorf("start the watchdog that removes the hooks if finproxy is killed: %w", err)
			}
			out := cmd.OutOrStdout()
			res, err := runner.Run(cmd.Context(), runner.Options{
				Config:   cfg,
				LogPath:  logPath,
				PcapPath: pcapPath,
				Duration: duration,
				Logger:   slog.Default(),
				Observe:  observeOpts,
				Stack:    stack,
				Ready: func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "finproxy: ready: %s on queue %d (%s hook, port %d)\n",
						cfg.Name, queueOf(cfg), hookOf(cfg), cfg.Target.Port)
				},
			})
			if res != nil {
				printSummary(out, res)
				err = panicExit(res, err)
				if pcapPath != "" {
					fmt.Fprintf(out, "pcap: %d packets in %s\n", res.PcapPackets, pcapPath)
				}
				if rerr := of.finish(out, cfg, res); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			if ce := (*nfq.ConflictError)(nil); errors.As(err, &ce) {
				err = fmt.Errorf("%w; stop that run first, or give --stack to run both anyway", err)
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", configUsage)
	cmd.Flags().StringVar(&logPath, "log", "", "write the event log (JSON lines) to this file")
	cmd.Flags().StringVar(&pcapPath, "pcap", "", "write a pcapng capture: every queued segment as it arrived (and as it left, when changed or injected), each with a comment naming the rule and the verdict")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop by itself after this long (0: until Ctrl-C)")
	cmd.Flags().BoolVar(&stack, "stack", false, "hook the target even when a live run hooks an overlapping scope in this namespace (the segments both match reach only this run while it runs)")
	addNiceFlag(cmd, &nice)
	tf.add(cmd)
	of.add(cmd)
	return cmd
}

func queueOf(cfg *rules.Config) uint16 {
	if cfg.Target.Queue == 0 {
		return rules.DefaultQueue
	}
	return cfg.Target.Queue
}

func hookOf(cfg *rules.Config) rules.HookMode {
	if cfg.Target.Hook == "" {
		return rules.HookLocal
	}
	return cfg.Target.Hook
}

// panicExit makes a run whose actions panicked end with exit status 1 (err, when the run
// failed anyway): the faults it was asked for did not all happen.
func panicExit(res *runner.Result, err error) error {
	var n uint64
	for _, c := range res.Counters {
		n += c.Panicked
	}
	if n == 0 || err != nil {
		return err
	}
	return &exitError{1, fmt.Errorf("actions panicked %d times: those segments passed untouched (see the WARNING above)", n)}
}

// printSummary prints the per-rule counters and the queue's health.
func printSummary(w io.Writer, res *runner.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tMATCHED\tPASSED\tDROPPED\tDELAYED\tHELD\tMERGED\tMODIFIED\tINJECTED")
	for _, c := range res.Counters {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.Rule, c.Matched, c.Passed, c.Dropped, c.Delayed, c.Held, c.Merged, c.Modified, c.Injected)
	}
	tw.Flush()
	var problems []string
	for _, c := range res.Counters {
		if c.Panicked > 0 {
			problems = append(problems, fmt.Sprintf("rule %s: its action panicked %d times (those segments were accepted as they came: the fault did not happen; a bug in finproxy, please report it with the log's stack)", c.Rule, c.Panicked))
		}
	}
	q := res.Queue
	if q.ENOBUFS > 0 {
		problems = append(problems, fmt.Sprintf("%d ENOBUFS (the kernel dropped queued segments: the reader fell behind)", q.ENOBUFS))
	}
	if res.Kernel != nil && (res.Kernel.Dropped > 0 || res.Kernel.UserDropped > 0) {
		problems = append(problems, fmt.Sprintf("kernel queue dropped %d (full) and %d (user) segments", res.Kernel.Dropped, res.Kernel.UserDropped))
	}
	if q.ENOENT > 0 {
		problems = append(problems, fmt.Sprintf("%d verdicts for segments the kernel no longer held", q.ENOENT))
	}
	if res.RecordsLost > 0 {
		problems = append(problems, fmt.Sprintf("the event log lost %d of %d lines (a write error, logged when it happened)", res.RecordsLost, res.Records+res.RecordsLost))
	}
	if res.PcapLost > 0 {
		problems = append(problems, fmt.Sprintf("the capture lost %d of %d packets (a write error, logged when it happened)", res.PcapLost, res.PcapPackets+res.PcapLost))
	}
	if q.VerdictErrors > 0 {
		problems = append(problems, fmt.Sprintf("%d verdicts could not be written (their segments waited in the kernel queue until finproxy closed it)", q.VerdictErrors))
	}
	if u := res.Unclassified; u.Total() > 0 {
		fate := "dropped"
		if u.Verdict == rules.UnclassifiedAccept {
			fate = "accepted unseen"
		}
		problems = append(problems, fmt.Sprintf("%d queued packets the rules could not see (%d fragments, %d malformed, %d not TCP) were %s (target.unclassified)",
			u.Total(), u.Fragments, u.Malformed, u.NotTCP, fate))
	}
	fmt.Fprintf(w, "segments: %d queued, %d verdicts, %d unclassified, %d logged\n", q.Received, q.Verdicts, res.Unclassified.Total(), res.Records)
	if len(problems) > 0 {
		fmt.Fprintf(w, "WARNING: %s\n", strings.Join(problems, "; "))
	}
}
