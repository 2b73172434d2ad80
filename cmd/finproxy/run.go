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
	"github.com/finproxy/finproxy/rules"
	"github.com/spf13/cobra"
)

type targetFlags struct {
	port  uint16
	hook  string
	queue uint16
	netns string
}

func (f *targetFlags) add(cmd *cobra.Command) {
	cmd.Flags().Uint16Var(&f.port, "port", 0, "override the config's target port")
	cmd.Flags().StringVar(&f.hook, "hook", "", "override the config's hook mode: local or forward")
	cmd.Flags().Uint16Var(&f.queue, "queue", 0, "override the config's NFQUEUE number")
	cmd.Flags().StringVar(&f.netns, "netns", "", "do all the work inside this named network namespace (ip netns)")
}

// apply puts the command-line overrides into cfg and validates the result.
func (f *targetFlags) apply(cfg *rules.Config) error {
	if f.port != 0 {
		cfg.Target.Port = f.port
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
		cfg.Target.Queue = f.queue
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
	)
	cmd := &cobra.Command{
		Use:   "run -c CONFIG",
		Short: "Inject the config's faults until Ctrl-C (or --duration)",
		Example: `  sudo finproxy run -c configs/lost-final-ack.toml
  sudo finproxy run -c configs/lost-fin.toml --port 6379 --netns app --duration 30s --log events.jsonl --pcap capture.pcapng
  sudo finproxy run -c lost-final-ack --hook forward --netns router --observe-netns client,server --report run.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return &exitError{2, fmt.Errorf("run: -c CONFIG is required")}
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return &exitError{2, err}
			}
			if err := tf.apply(cfg); err != nil {
				return &exitError{2, err}
			}
			observeOpts, err := of.options()
			if err != nil {
				return &exitError{2, err}
			}
			if err := enterNetns(tf.netns); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("run needs root (NFQUEUE and iptables): try sudo")
			}
			out := cmd.OutOrStdout()
			res, err := runner.Run(cmd.Context(), runner.Options{
				Config:   cfg,
				LogPath:  logPath,
				PcapPath: pcapPath,
				Duration: duration,
				Logger:   slog.Default(),
				Observe:  observeOpts,
				Ready: func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "finproxy: ready: %s on queue %d (%s hook, port %d)\n",
						cfg.Name, queueOf(cfg), hookOf(cfg), cfg.Target.Port)
				},
			})
			if res != nil {
				printSummary(out, res)
				if pcapPath != "" {
					fmt.Fprintf(out, "pcap: %d packets in %s\n", res.PcapPackets, pcapPath)
				}
				if rerr := of.finish(out, cfg, res); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "scenario config: a TOML file, or a built-in preset name such as lost-fin")
	cmd.Flags().StringVar(&logPath, "log", "", "write the event log (JSON lines) to this file")
	cmd.Flags().StringVar(&pcapPath, "pcap", "", "write a pcapng capture: every queued segment as it arrived (and as it left, when changed or injected), each with a comment naming the rule and the verdict")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop by itself after this long (0: until Ctrl-C)")
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

// printSummary prints the per-rule counters and the queue's health.
func printSummary(w io.Writer, res *runner.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tMATCHED\tPASSED\tDROPPED\tDELAYED\tHELD\tMERGED\tMODIFIED\tINJECTED")
	for _, c := range res.Counters {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.Rule, c.Matched, c.Passed, c.Dropped, c.Delayed, c.Held, c.Merged, c.Modified, c.Injected)
	}
	tw.Flush()
	var problems []string
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
