package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/story"
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
					story.WriteLadder(w, story.New(run.Records, run.Timeline))
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
