package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/finproxy/finproxy/nfq"
	"github.com/spf13/cobra"
)

func newCleanupCmd() *cobra.Command {
	var (
		netns string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove iptables chains and rules (and lab namespaces) that a crashed finproxy left behind",
		Long: `Remove iptables chains and rules (and lab namespaces, tracefs instances) that a crashed
finproxy left behind. The hooks of a run that is still alive (its rules name its pid and
start time) are kept and reported, unless --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := enterNetns(netns); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("cleanup needs root: try sudo")
			}
			w := cmd.OutOrStdout()
			var errs []error
			total, kept := 0, 0
			for _, v6 := range []bool{false, true} {
				name := map[bool]string{false: "iptables", true: "ip6tables"}[v6]
				ipt, err := nfq.NewIPTables(v6)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				removed, live, err := nfq.Cleanup(ipt, force)
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s: %s\n", name, r)
				}
				for _, l := range live {
					pids := make([]string, len(l.Owners))
					for i, o := range l.Owners {
						pids[i] = strconv.Itoa(o.PID)
					}
					fmt.Fprintf(w, "kept %s: %s: its finproxy run is alive (pid %s): stop it, or give --force\n",
						name, l.Chain, strings.Join(pids, ", "))
					kept++
				}
				total += len(removed)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
				}
			}
			for _, extra := range extraCleanups {
				removed, err := extra()
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s\n", r)
				}
				total += len(removed)
				if err != nil {
					errs = append(errs, err)
				}
			}
			if total == 0 && kept == 0 && len(errs) == 0 {
				fmt.Fprintln(w, "nothing to clean up")
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&netns, "netns", "", "clean up inside this named network namespace (ip netns)")
	cmd.Flags().BoolVar(&force, "force", false, "remove the hooks of live runs too (they go on, queueing nothing)")
	return cmd
}

// extraCleanups are added by other files (lab namespaces, tracefs instances).
var extraCleanups []func() ([]string, error)
