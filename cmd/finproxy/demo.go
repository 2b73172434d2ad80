package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/story"
	"github.com/finproxy/finproxy/viz"
	"github.com/spf13/cobra"
)

func init() {
	extraCleanups = append(extraCleanups, func() ([]string, error) { return lab.Cleanup(lab.DefaultPrefix) })
}

func newDemoCmd() *cobra.Command {
	var (
		keep  string
		only  []string
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run every preset once against built-in applications in throwaway namespaces: what happened, and a pass/fail table",
		Long: `demo needs nothing of yours. For each preset it builds a client, a router and a server
network namespace, runs the preset's built-in TCP server and client through them with
'finproxy run' on the router's FORWARD path, observes both sockets, and checks the
preset's expectations. It prints every segment finproxy saw with the rule that acted and
the verdict, the states each side went through, and at the end a pass/fail table.
Everything it creates is removed, also on Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			surviveClosedOutput()
			if os.Geteuid() != 0 {
				return fmt.Errorf("demo needs root (network namespaces, NFQUEUE, iptables, tracefs): try sudo")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir, done, err := workDir(keep, "finproxy-demo-")
			if err != nil {
				return err
			}
			defer done()
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			type row struct {
				name, result, client, server string
				secs                         float64
			}
			var rows []row
			failed := 0
			start := time.Now()
			for _, name := range configs.Names() {
				if len(only) > 0 && !slices.Contains(only, name) {
					continue
				}
				if ctx.Err() != nil {
					break
				}
				cfg, err := loadConfig(ctx, name, nil)
				if err != nil {
					return err
				}
				if cfg.Lab == nil {
					continue
				}
				t0 := time.Now()
				rep, err := scenario.RunLab(ctx, scenario.LabOptions{
					Config: cfg, ConfigArg: name, Runs: 1, Finproxy: self,
					Dir: filepath.Join(dir, name), Logger: slog.Default(),
				})
				r := row{name: name, secs: time.Since(t0).Seconds()}
				if err != nil || rep == nil || len(rep.Runs) == 0 {
					failed++
					r.result = "ERROR"
					fmt.Fprintf(w, "== %s: %v\n\n", name, err)
					rows = append(rows, r)
					continue
				}
				run := rep.Runs[0]
				r.result = "pass"
				if !run.Pass {
					r.result = "FAIL"
					failed++
				}
				if len(run.Connections) > 0 {
					r.client = strings.Join(run.Connections[0].Client.States, " → ")
					r.server = strings.Join(run.Connections[0].Server.States, " → ")
				}
				rows = append(rows, r)
				if !quiet {
					fmt.Fprintf(w, "== %s: %s\n", name, cfg.Description)
					printLadder(w, run.Records, run.Timeline)
					fmt.Fprintf(w, "   client: %s\n   server: %s\n", r.client, r.server)
					for _, f := range run.Failures {
						fmt.Fprintf(w, "   FAILED: %s\n", f)
					}
					fmt.Fprintln(w)
				}
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PRESET\tRESULT\tTIME\tCLIENT\tSERVER")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%.1fs\t%s\t%s\n", r.name, r.result, r.secs, r.client, r.server)
			}
			tw.Flush()
			fmt.Fprintf(w, "%d of %d presets passed in %.0fs\n", len(rows)-failed, len(rows), time.Since(start).Seconds())
			if keep != "" {
				fmt.Fprintf(w, "event logs and output kept in %s\n", keep)
			}
			if failed > 0 {
				return &exitError{1, fmt.Errorf("%d of the demo scenarios failed", failed)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keep, "keep", "", "keep each scenario's event log and output in this directory")
	cmd.Flags().StringSliceVar(&only, "only", nil, "run only these presets")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the table")
	return cmd
}

// printLadder prints what happened on the connection in time order: the segments of the
// event log (sequence numbers relative to each side's initial one, as Wireshark shows
// them) and, when observed, each side's state changes and retransmissions.
func printLadder(w io.Writer, recs []rules.Record, conn *observe.Connection) {
	type line struct {
		at   int64
		text string
	}
	var lines []line
	var mine []rules.Record
	for _, r := range recs {
		if conn == nil || viz.Belongs(r, conn) {
			mine = append(mine, r)
		}
	}
	base := story.NewSeqBase(mine)
	if len(mine) > 0 && !base.FromSYN() {
		lines = append(lines, line{mine[0].Time - 1, "(seq and ack relative to each side's first segment queued: the rules needed no handshake)"})
	}
	for _, r := range mine {
		rs, ra := base.Rel(r.Side, r.Seq, r.Ack)
		seq, ack := fmt.Sprint(rs), fmt.Sprint(ra)
		if !r.Flags.Has(segment.ACK) {
			ack = "-"
		}
		verdict := "accepted"
		at := r.Time
		switch {
		case r.Injected && r.Verdict == rules.Drop:
			verdict = "NOT SENT (injection failed)"
		case r.Injected:
			// A segment finproxy made: shown when it was sent.
			verdict, at = "INJECTED", r.VerdictTime
		case r.Verdict == rules.Drop:
			verdict = "DROPPED"
		case r.Modified:
			verdict = "accepted REWRITTEN"
		}
		if r.Rule != "" {
			verdict += " by " + r.Rule
			if r.HeldNS > int64(time.Millisecond) && !r.Injected {
				verdict += fmt.Sprintf(" after %s %.0f ms", r.Action, float64(r.HeldNS)/1e6)
			}
		}
		arrow := "──▶"
		if r.Side == rules.Server {
			arrow = "◀──"
		}
		lines = append(lines, line{at, fmt.Sprintf("%-6s %s %-8s seq=%s ack=%s len=%d  %s", r.Side, arrow, r.Flags, seq, ack, r.Len, verdict)})
	}
	if conn != nil {
		for _, sd := range []struct {
			name string
			s    *observe.Side
		}{{"client", &conn.Client}, {"server", &conn.Server}} {
			for _, st := range sd.s.States {
				lines = append(lines, line{st.At.UnixNano(), fmt.Sprintf("%-6s     is %s", sd.name, st.State)})
			}
			for _, rt := range sd.s.Retransmits {
				lines = append(lines, line{rt.At.UnixNano(), fmt.Sprintf("%-6s     retransmits in %s", sd.name, rt.State)})
			}
			for _, rs := range sd.s.ResetsSent {
				lines = append(lines, line{rs.At.UnixNano(), fmt.Sprintf("%-6s     sends RST (%s)", sd.name, rs.Reason)})
			}
			for _, rs := range sd.s.ResetsReceived {
				lines = append(lines, line{rs.At.UnixNano(), fmt.Sprintf("%-6s     receives RST", sd.name)})
			}
		}
	}
	if len(lines) == 0 {
		fmt.Fprintln(w, "   (nothing was seen)")
		return
	}
	// The event log and the observer share the wall clock.
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at < lines[j].at })
	t0 := lines[0].at
	for _, l := range lines {
		fmt.Fprintf(w, "   %+9.1f ms  %s\n", float64(l.at-t0)/1e6, l.text)
	}
}
