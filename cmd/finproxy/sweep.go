package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/internal/sweep"
	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/spf13/cobra"
)

func newSweepCmd() *cobra.Command {
	var (
		server, client, ready, faults string
		reportDir, junit, failOn      string
		apps                          appFlags
		runs                          int
		port                          uint16
		closeWait, hang, delay        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sweep --server CMD --client CMD --port N",
		Short: "Try every teardown fault against your own server and client: which make it leak sockets, hang or fail",
		Long: `sweep runs your server and client in the lab (as 'finproxy lab' does: three network
namespaces, finproxy on the router) under each fault of a list, several times, observes
both applications' sockets and processes, and says what each fault did to them:

  leak    a socket held in CLOSE_WAIT past --close-wait, or a socket the kernel closed (a
          reset) whose file descriptor the application never closed, with its process
  hang    the client still running after --hang, a socket held by its application in
          FIN_WAIT2/LAST_ACK/CLOSING past the bound, or one side ESTABLISHED with the
          other gone
  linger  an orphan socket (no process holds it) still in FIN_WAIT2/LAST_ACK/CLOSING, or
          one the kernel gave up retransmitting on: bounded by the kernel's timers
  error   an application exited with a non-zero status (its output's last line)

The default faults are the baseline (none), every preset whose fault applies to any
client and server, and for each side the loss, the delay (--delay) and a reset at its
first data segment. --faults takes names (see --list-faults) or a directory of configs.`,
		Example: `  sudo finproxy sweep --server 'my-server --listen {server_addr}:{port}' --ready 'listening' \
                     --client 'my-client {server_addr}:{port}' --port 9000 \
                     --runs 5 --close-wait 2s --report sweep/ --junit sweep.xml
  finproxy sweep --list-faults`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			surviveClosedOutput()
			w := cmd.OutOrStdout()
			if list, _ := cmd.Flags().GetBool("list-faults"); list {
				for _, n := range sweep.FaultNames() {
					fmt.Fprintln(w, n)
				}
				return nil
			}
			var missing []string
			for _, f := range []struct{ name, v string }{{"--server", server}, {"--client", client}} {
				if f.v == "" {
					missing = append(missing, f.name)
				}
			}
			if port == 0 {
				missing = append(missing, "--port")
			}
			if len(missing) > 0 {
				return &exitError{2, fmt.Errorf("sweep: %s required (the server's and client's commands, the server's port)", strings.Join(missing, ", "))}
			}
			if runs < 1 || runs > 1000 {
				return &exitError{2, fmt.Errorf("sweep: --runs %d: want 1 to 1000", runs)}
			}
			for _, d := range []struct {
				name string
				v    time.Duration
			}{{"--close-wait", closeWait}, {"--hang", hang}, {"--delay", delay}} {
				if d.v <= 0 || d.v > time.Hour {
					return &exitError{2, fmt.Errorf("sweep: %s %s: want more than 0 and at most 1h", d.name, d.v)}
				}
			}
			if closeWait >= hang {
				return &exitError{2, fmt.Errorf("sweep: --close-wait %s must be shorter than --hang %s: a run waits at most --hang for its connections to end", closeWait, hang)}
			}
			fail, err := parseKinds(failOn)
			if err != nil {
				return &exitError{2, fmt.Errorf("sweep: --fail-on: %w", err)}
			}
			srvArgv, err := config.SplitCommand(server)
			if err != nil {
				return &exitError{2, fmt.Errorf("--server: %w", err)}
			}
			cliArgv, err := config.SplitCommand(client)
			if err != nil {
				return &exitError{2, fmt.Errorf("--client: %w", err)}
			}
			lt, stopGrace, err := apps.parse(cmd)
			if err != nil {
				return err
			}
			if stopGrace == 0 {
				stopGrace = config.DefaultStopGrace
			}
			if err := checkOutputDir("--report", reportDir); err != nil {
				return &exitError{2, err}
			}
			if err := checkOutputFiles([2]string{"--junit", junit}); err != nil {
				return &exitError{2, err}
			}
			list, err := sweepFaults(faults, delay)
			if err != nil {
				return &exitError{2, fmt.Errorf("--faults: %w", err)}
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("sweep needs root (network namespaces, NFQUEUE, iptables, tracefs): try sudo")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir, done, err := workDir(reportDir, "finproxy-sweep-")
			if err != nil {
				return fmt.Errorf("--report %s: %w", reportDir, err)
			}
			defer done()
			procs := scenario.NewProcs()
			ctx, sig, stopSignals := labSignals(cmd.Context(), procs)
			defer stopSignals()
			tty := isTTY(w)
			rep, err := sweep.Run(ctx, sweep.Options{
				Faults: list, Port: port, Runs: runs, CloseWait: closeWait, Hang: hang,
				Apps:     config.LabOverrides{Server: srvArgv, Client: cliArgv, Ready: ready, ServerLifetime: lt, StopGrace: stopGrace},
				Finproxy: self, Dir: dir, Procs: procs, Logger: slog.Default(),
				Progress: func(p sweep.Progress) { printSweepProgress(w, tty, p) },
			})
			if tty {
				fmt.Fprint(w, "\r\033[K")
			}
			if rep != nil {
				sweep.WriteTable(w, rep)
				if reportDir != "" {
					if werr := sweep.WriteReport(reportDir, rep); werr != nil {
						return fmt.Errorf("write report: %w", werr)
					}
					fmt.Fprintf(w, "report: %s (%s)\n", filepath.Join(reportDir, "report.json"), filepath.Join(reportDir, "index.html"))
				}
				if junit != "" {
					if werr := sweep.WriteJUnit(junit, rep, fail); werr != nil {
						return fmt.Errorf("write junit: %w", werr)
					}
				}
			}
			if s := sig(); s != 0 {
				return &exitError{128 + int(s), fmt.Errorf("sweep: interrupted by %v; the report has the faults done", s)}
			}
			if err != nil {
				return err
			}
			var failing []string
			for _, f := range rep.Faults {
				if f.Has(fail...) {
					failing = append(failing, f.Name)
				}
			}
			if len(failing) > 0 {
				return &exitError{1, fmt.Errorf("sweep: %s found with %s", strings.Join(fail, " or "), strings.Join(failing, ", "))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "the server's command, with {server_addr}, {client_addr}, {port}, {finproxy}")
	f.StringVar(&client, "client", "", "the client's command, with the same placeholders")
	f.StringVar(&ready, "ready", config.DefaultReady, "text the server prints once it listens")
	f.Uint16Var(&port, "port", 0, "the server's TCP port")
	f.IntVar(&runs, "runs", 3, "runs per fault")
	f.StringVar(&faults, "faults", "", "faults to try: names separated by commas (--list-faults), or a directory of configs (default: see above)")
	f.Bool("list-faults", false, "list the faults sweep knows by name and exit")
	f.DurationVar(&closeWait, "close-wait", 2*time.Second, "a socket in CLOSE_WAIT this long is a leak")
	f.DurationVar(&hang, "hang", 5*time.Second, "bound on the client's run and on the wait for the connections to end after it")
	f.DurationVar(&delay, "delay", time.Second, "the delay of the generated delay-data-* faults")
	f.StringVar(&failOn, "fail-on", "leak,hang", "finding kinds that make the exit status 1 (leak, hang, linger, error; \"\" none)")
	f.StringVar(&reportDir, "report", "", "write DIR/report.json, DIR/index.html (a ladder per finding) and each fault's runs in DIR/FAULT/")
	f.StringVar(&junit, "junit", "", "write a JUnit XML file, one test case per fault")
	apps.register(cmd, "\"run\" (a server per run, the default) or \"lab\" (one server per fault)")
	return cmd
}

// sweepFaults reads --faults: empty for the default list, a directory, or names.
func sweepFaults(arg string, delay time.Duration) ([]sweep.Fault, error) {
	if arg == "" {
		return sweep.DefaultFaults(delay)
	}
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() {
		return sweep.DirFaults(arg)
	}
	return sweep.NamedFaults(strings.Split(arg, ","), delay)
}

func parseKinds(s string) ([]string, error) {
	var out []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if !slices.Contains(sweep.Kinds, k) {
			msg := fmt.Sprintf("unknown kind %q (want %s)", k, strings.Join(sweep.Kinds, ", "))
			if sug := tomlpos.Suggest(k, sweep.Kinds); sug != "" {
				msg = fmt.Sprintf("unknown kind %q (did you mean %s?)", k, sug)
			}
			return nil, fmt.Errorf("%s", msg)
		}
		out = append(out, k)
	}
	return out, nil
}

// printSweepProgress shows "fault k of n, run j of m" in place on a terminal, a plain
// line per run otherwise.
func printSweepProgress(w io.Writer, tty bool, p sweep.Progress) {
	var found []string
	for _, k := range sweep.Kinds {
		if n := p.Findings[k]; n > 0 {
			found = append(found, fmt.Sprintf("%s %d", k, n))
		}
	}
	so := "nothing so far"
	if len(found) > 0 {
		so = strings.Join(found, ", ") + " so far"
	}
	last := "nothing unusual"
	if p.Last != nil && len(p.Last.Findings) > 0 {
		var keys []string
		for _, f := range p.Last.Findings {
			keys = append(keys, f.Kind+": "+f.Key)
		}
		last = strings.Join(keys, "; ")
	}
	if tty {
		fmt.Fprintf(w, "\r\033[Kfault %d of %d (%s), run %d of %d: %s", p.Fault, p.Faults, p.Name, p.Run, p.Runs, so)
		return
	}
	fmt.Fprintf(w, "fault %d of %d (%s), run %d of %d: %s\n", p.Fault, p.Faults, p.Name, p.Run, p.Runs, last)
}
