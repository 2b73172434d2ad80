package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/story"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newLabCmd() *cobra.Command {
	var (
		cfgPath, reportDir, junit string
		pcapPath                  string
		runs                      int
		port                      uint // 0 or 1 to 65535: checkSharedFlags
		server, client, ready     string
		appsName                  string
		apps                      appFlags
	)
	cmd := &cobra.Command{
		Use:   "lab -c CONFIG",
		Short: "Run a scenario against real applications in throwaway namespaces and check what was observed",
		Long: `lab builds a client, a router and a server network namespace (with the config's
sysctls), and for each run starts the [lab] server, 'finproxy run' on the router's FORWARD
path and the [lab] client, observes both sockets (tracepoints and sock_diag) and checks the
config's [expect] section against what the kernel showed. Exit code 0 only when every run
passed.

Every application runs in a process group of its own. A run is over when the client has
exited and every connection of the run is over (CLOSE or TIME_WAIT, no retransmission
due), or when the server exited by itself: a server still running then (any daemon) is
stopped with SIGTERM to its group, SIGKILL after the stop grace. SIGINT or SIGTERM ends
the lab within 5 s, applications, namespaces, hooks and tracefs instance removed (exit
130 or 143); a second one kills the applications at once.`,
		Example: `  sudo finproxy lab -c configs/simultaneous-close.toml --runs 20 --report out/ --junit junit.xml
  sudo finproxy lab -c my-service.toml
  sudo finproxy lab -c lost-fin --apps socat --runs 20
  sudo finproxy lab -c lost-fin --server 'socat -d -d TCP-LISTEN:{port},bind={server_addr},reuseaddr EXEC:cat' --client 'socat - TCP:{server_addr}:{port}' --ready 'listening on'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			surviveClosedOutput()
			if cfgPath == "" {
				return &exitError{2, fmt.Errorf("lab: -c CONFIG is required")}
			}
			if runs < 1 {
				return &exitError{2, fmt.Errorf("lab: --runs %d: want at least 1", runs)}
			}
			if cfgPath == stdinArg {
				return &exitError{2, fmt.Errorf("lab: -c -: each run's finproxy reads the config again: give it as a file or a preset name")}
			}
			cfg, err := loadConfig(cmd.Context(), cfgPath, nil)
			if err != nil {
				return &exitError{2, err}
			}
			if cfg.Lab == nil {
				return &exitError{2, fmt.Errorf("%s: no [lab] section: it names the server and client commands to run (see configs/*.toml)", cfg.File)}
			}
			var srvArgv, cliArgv []string
			if appsName != "" {
				alt, ok := cfg.Lab.Apps[appsName]
				if !ok {
					names := slices.Sorted(maps.Keys(cfg.Lab.Apps))
					if len(names) == 0 {
						return &exitError{2, fmt.Errorf("--apps %s: %s has no [lab.apps] section: give --server and --client", appsName, cfg.File)}
					}
					return &exitError{2, fmt.Errorf("--apps %s: %s has no [lab.apps.%s] (it has: %s)", appsName, cfg.File, appsName, strings.Join(names, ", "))}
				}
				srvArgv, cliArgv = alt.Server, alt.Client
				if ready == "" {
					ready = alt.Ready
				}
			}
			if server != "" {
				if srvArgv, err = config.SplitCommand(server); err != nil {
					return &exitError{2, fmt.Errorf("--server: %w", err)}
				}
			}
			if client != "" {
				if cliArgv, err = config.SplitCommand(client); err != nil {
					return &exitError{2, fmt.Errorf("--client: %w", err)}
				}
			}
			lt, stopGrace, err := apps.parse(cmd)
			if err != nil {
				return err
			}
			if err := checkOutputDir("--report", reportDir); err != nil {
				return &exitError{2, err}
			}
			if err := checkOutputFiles([2]string{"--junit", junit}); err != nil {
				return &exitError{2, err}
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("lab needs root (network namespaces, NFQUEUE, iptables, tracefs): try sudo")
			}
			procs := scenario.NewProcs()
			ctx, sig, stopSignals := labSignals(cmd.Context(), procs)
			defer stopSignals()
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir, done, err := workDir(reportDir, "finproxy-lab-")
			if err != nil {
				return err
			}
			defer done()
			w := cmd.OutOrStdout()
			tty := isTTY(w)
			rep, err := scenario.RunLab(ctx, scenario.LabOptions{
				Config: cfg, ConfigArg: cfgPath, Runs: runs, Finproxy: self, Dir: dir, Port: uint16(port),
				Override: config.LabOverrides{Server: srvArgv, Client: cliArgv, Ready: ready, ServerLifetime: lt, StopGrace: stopGrace},
				Logger:   slog.Default(), Procs: procs,
				Progress: func(done, total, passed int, r *scenario.RunReport) {
					printProgress(w, tty, done, total, passed, r)
				},
			})
			if tty {
				fmt.Fprintln(w)
			}
			if rep != nil {
				if reportDir != "" {
					if werr := scenario.WriteReport(reportDir, rep); werr != nil {
						return fmt.Errorf("write report: %w", werr)
					}
				}
				if pcapPath != "" {
					if werr := scenario.JoinCaptures(pcapPath, dir, rep); werr != nil {
						return fmt.Errorf("write pcap: %w", werr)
					}
				}
				if junit != "" {
					if werr := scenario.WriteJUnit(junit, rep); werr != nil {
						return fmt.Errorf("write junit: %w", werr)
					}
				}
				printLabSummary(w, rep)
				if reportDir != "" {
					fmt.Fprintf(w, "report: %s (diagrams: %s)\n", filepath.Join(reportDir, "report.json"), filepath.Join(reportDir, "index.html"))
				}
			}
			if s := sig(); s != 0 {
				done := 0
				if rep != nil {
					done = len(rep.Runs)
				}
				// 128 + the signal's number, as a shell reports a process it ended.
				return &exitError{128 + int(s), fmt.Errorf("lab: interrupted by %v after %d runs; its applications, namespaces and hooks are removed", s, done)}
			}
			if err != nil {
				return err
			}
			if rep.Failed > 0 {
				return &exitError{1, fmt.Errorf("%s: %d of %d runs failed", rep.Scenario, rep.Failed, len(rep.Runs))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "scenario config with [lab] and [expect]: a TOML file or a preset name")
	cmd.Flags().IntVar(&runs, "runs", 1, "how many times to run the scenario")
	cmd.Flags().StringVar(&reportDir, "report", "", "write DIR/report.json, DIR/index.html (the runs, a ladder diagram) and keep each run's event log, capture and diagram in DIR/run-N/")
	cmd.Flags().StringVar(&pcapPath, "pcap", "", "write every run's capture (pcapng, one section per run) to this file")
	cmd.Flags().StringVar(&junit, "junit", "", "write a JUnit XML file, one test case per run")
	cmd.Flags().UintVar(&port, "port", 0, "override the config's target port")
	cmd.Flags().StringVar(&server, "server", "", "override [lab] server: a command line, with {server_addr}, {client_addr}, {port}, {finproxy}")
	cmd.Flags().StringVar(&client, "client", "", "override [lab] client: a command line, with the same placeholders")
	apps.register(cmd, "override [lab] server_lifetime: \"run\" (a server per run, the default) or \"lab\" (one server for all runs, for daemons slow to start); --stop-grace overrides [lab] stop_grace")
	cmd.Flags().StringVar(&appsName, "apps", "", "run the config's [lab.apps.NAME] server and client instead of [lab]'s (--server, --client, --ready override them in turn)")
	cmd.Flags().StringVar(&ready, "ready", "", "override [lab] ready: the text the server prints once it listens (socat -d -d: \"listening on\")")
	return cmd
}

// labSignals returns a context that SIGINT, SIGTERM or SIGHUP cancels, and the signal that did
// (0 until one did). A second signal kills every application's process group at once;
// the teardown (namespaces, hooks, tracefs instance) still runs.
func labSignals(parent context.Context, procs *scenario.Procs) (context.Context, func() syscall.Signal, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				sig := s.(syscall.Signal)
				if got.CompareAndSwap(0, int32(sig)) {
					slog.Warn("lab: stopping (again to kill the applications at once)", "signal", sig)
					cancel(fmt.Errorf("%v", sig))
					continue
				}
				slog.Warn("lab: killing the applications", "signal", sig)
				procs.KillAll()
			}
		}
	}()
	return ctx, func() syscall.Signal { return syscall.Signal(got.Load()) }, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// printProgress shows "run k of N" in place on a terminal, and one line per run otherwise.
func printProgress(w io.Writer, tty bool, done, total, passed int, r *scenario.RunReport) {
	status := "pass"
	if !r.Pass {
		status = "FAIL"
	}
	if tty {
		fmt.Fprintf(w, "\r\033[Krun %d of %d: %s (%d passed so far)", done, total, status, passed)
		if !r.Pass {
			fmt.Fprintf(w, "\n  run %d: %s\n", r.Run, r.Failures[0])
		}
		return
	}
	fmt.Fprintf(w, "run %d of %d: %s in %.0f ms\n", done, total, status, r.DurationMS)
}

// maxLadderLines bounds what a failed run's summary shows of what happened.
const maxLadderLines = 60

// printLabSummary is the one-screen summary: the result, and for failed runs which
// expectation failed and what was seen instead.
func printLabSummary(w io.Writer, rep *scenario.LabReport) {
	fmt.Fprintf(w, "%s: %d of %d runs passed\n", rep.Scenario, rep.Passed, len(rep.Runs))
	for _, sk := range rep.Skipped {
		fmt.Fprintf(w, "  not checked: %s (%s)\n", sk.Expectation, sk.Reason)
	}
	stopped := 0
	var last *scenario.Stop
	for _, r := range rep.Runs {
		if r.ServerStop != nil {
			stopped, last = stopped+1, r.ServerStop
		}
	}
	if stopped > 0 {
		fmt.Fprintf(w, "  the server was still running when the scenario was over in %d of %d runs: stopped by the lab (last: %s, %s)\n",
			stopped, len(rep.Runs), last.Signal, last.Status)
	}
	if k := rep.KernelTotals(); k != nil && len(k.Client.Notes)+len(k.Server.Notes) > 0 {
		runs := "the run"
		if len(rep.Runs) > 1 {
			runs = fmt.Sprintf("%d runs", len(rep.Runs))
		}
		fmt.Fprintf(w, "  what the kernels counted over %s:\n", runs)
		for _, side := range []struct {
			name  string
			notes []string
		}{{"client", k.Client.Notes}, {"server", k.Server.Notes}} {
			for _, n := range side.notes {
				fmt.Fprintf(w, "    %s: %s\n", side.name, n)
			}
		}
	}
	shown := 0
	for _, r := range rep.Runs {
		if r.Pass {
			continue
		}
		if shown == 5 {
			fmt.Fprintf(w, "  ... %d more failed runs in the report\n", rep.Failed-shown)
			break
		}
		shown++
		fmt.Fprintf(w, "  run %d failed:\n", r.Run)
		for _, f := range r.Failures {
			fmt.Fprintf(w, "    - %s\n", f)
		}
		if len(r.Connections) > 0 {
			c := r.Connections[0]
			fmt.Fprintf(w, "    client: %s\n    server: %s\n", strings.Join(c.Client.States, " → "), strings.Join(c.Server.States, " → "))
		}
		// What else the run knew: what happened in time order (the segments finproxy
		// saw and the states the observer saw), the observer's warnings (a source that
		// failed) and what the kernels counted in this run alone: a CI log is often all
		// there is of a run that failed once.
		if len(r.Records) > 0 || r.Timeline != nil {
			fmt.Fprintln(w, "    what happened:")
			var b strings.Builder
			story.WriteLadder(&b, story.New(r.Records, r.Timeline))
			lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
			for i, l := range lines {
				if i == maxLadderLines {
					fmt.Fprintf(w, "      ... %d more lines in the report's event log\n", len(lines)-i)
					break
				}
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "    warning: %s\n", warn)
		}
		if r.Kernel != nil {
			for _, side := range []struct {
				name string
				k    scenario.KernelSide
			}{{"client", r.Kernel.Client}, {"server", r.Kernel.Server}} {
				for _, n := range side.k.Notes {
					fmt.Fprintf(w, "    kernel, %s: %s\n", side.name, n)
				}
			}
		}
	}
}
