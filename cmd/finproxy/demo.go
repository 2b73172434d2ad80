package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/spf13/cobra"
)

// demoCase pairs a preset with built-in applications that produce its scenario.
type demoCase struct {
	preset string
	server []string
	client []string
}

// demoCases: the client is A (closes first) except in simultaneous-close, where both close.
var demoCases = []demoCase{
	{"lost-fin", []string{"server", "--mode", "echo-close"}, []string{"client", "--mode", "send-close", "--bytes", "1000"}},
	{"lost-final-ack", []string{"server", "--mode", "echo-close"}, []string{"client", "--mode", "send-close", "--bytes", "1000"}},
	// The server closes 100 ms after EOF, so its kernel's delayed ACK (about 40 ms) leaves
	// first, as a pure ACK: the one the merge rule folds into the FIN.
	{"three-way-close", []string{"server", "--mode", "echo-close", "--close-delay", "100ms"}, []string{"client", "--mode", "send-close", "--bytes", "1000"}},
	{"simultaneous-close", []string{"server", "--mode", "simultaneous"}, []string{"client", "--mode", "request-read-close"}},
}

func init() {
	extraCommands = append(extraCommands, newDemoCmd)
	extraCleanups = append(extraCleanups, func() ([]string, error) { return lab.Cleanup("fp") })
}

func newDemoCmd() *cobra.Command {
	var (
		keep string
		only []string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run each preset once against built-in applications in throwaway namespaces and show what happened",
		Long: `demo builds a client, a router and a server network namespace, runs a built-in TCP server
and client through them, and for each preset runs 'finproxy run' on the router's FORWARD
path. It prints every segment finproxy saw, with the rule that acted and the verdict.
Nothing of yours is needed and everything is removed at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("demo needs root (network namespaces, NFQUEUE, iptables): try sudo")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir := keep
			if dir == "" {
				if dir, err = os.MkdirTemp("", "finproxy-demo-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			topo, err := lab.New(ctx, lab.Options{Prefix: "fp"})
			if err != nil {
				return fmt.Errorf("build the lab namespaces: %w", err)
			}
			defer topo.Close()
			fmt.Fprintf(w, "lab: client %s (%s) -> router %s -> server %s (%s)\n\n",
				topo.Client, topo.ClientAddr, topo.Router, topo.Server, topo.ServerAddr)
			failed := 0
			for i, c := range demoCases {
				if len(only) > 0 && !contains(only, c.preset) {
					continue
				}
				if ctx.Err() != nil {
					break
				}
				port := uint16(8080 + i)
				cfg, _ := loadConfig(c.preset)
				fmt.Fprintf(w, "== %s: %s\n", c.preset, cfg.Description)
				srv := append([]string{self, "app"}, c.server...)
				srv = append(srv, "--listen", "{server_addr}:{port}", "--count", "1")
				cl := append([]string{self, "app"}, c.client...)
				cl = append(cl, "--connect", "{server_addr}:{port}", "--count", "1")
				start := time.Now()
				res, err := scenario.Run(ctx, topo, scenario.Spec{
					Config: c.preset, Port: port, Server: srv, Client: cl, Finproxy: self,
					Dir: filepath.Join(dir, c.preset),
				})
				if err != nil {
					failed++
					fmt.Fprintf(w, "   FAILED: %v\n\n", err)
					continue
				}
				printLadder(w, res.Records)
				fmt.Fprintln(w)
				indent(w, res.Summary)
				ok := res.ClientErr == nil && res.ServerErr == nil && res.RunErr == nil
				status := "ok"
				if !ok {
					failed++
					status = fmt.Sprintf("FAILED (client: %v, server: %v, finproxy: %v)\n%s%s", res.ClientErr, res.ServerErr, res.RunErr, res.ClientOutput, res.ServerOutput)
				}
				fmt.Fprintf(w, "   %s in %.1fs\n\n", status, time.Since(start).Seconds())
			}
			if keep != "" {
				fmt.Fprintf(w, "event logs kept in %s\n", keep)
			}
			if failed > 0 {
				return &exitError{1, fmt.Errorf("%d of the demo scenarios failed", failed)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keep, "keep", "", "keep each scenario's event log and output in this directory")
	cmd.Flags().StringSliceVar(&only, "only", nil, "run only these presets")
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func indent(w io.Writer, s string) {
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Fprintf(w, "   %s\n", l)
	}
}

// printLadder prints the segments of an event log with sequence numbers relative to each
// side's initial sequence number, as Wireshark does.
func printLadder(w io.Writer, recs []rules.Record) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "   (no segment was queued)")
		return
	}
	isn := map[string]uint32{}
	key := func(r rules.Record, s rules.Side) string {
		return fmt.Sprintf("%s|%s|%s", r.Client, r.Server, s)
	}
	t0 := recs[0].Time
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   T+ms\tFROM\tFLAGS\tSEQ\tACK\tLEN\tRULE\tVERDICT")
	for _, r := range recs {
		if r.Flags.Has(segment.SYN) {
			isn[key(r, r.Side)] = r.Seq
		}
		seq, ack := fmt.Sprint(r.Seq), fmt.Sprint(r.Ack)
		if base, ok := isn[key(r, r.Side)]; ok {
			seq = fmt.Sprint(r.Seq - base)
		}
		if base, ok := isn[key(r, r.Side.Other())]; ok && r.Flags.Has(segment.ACK) {
			ack = fmt.Sprint(r.Ack - base)
		}
		verdict := r.Verdict.String()
		if r.HeldNS > int64(time.Millisecond) {
			verdict += fmt.Sprintf(" (%s %.0f ms)", r.Action, float64(r.HeldNS)/1e6)
		}
		fmt.Fprintf(tw, "   %.1f\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			float64(r.Time-t0)/1e6, r.Side, r.Flags, seq, ack, r.Len, r.Rule, verdict)
	}
	tw.Flush()
}
