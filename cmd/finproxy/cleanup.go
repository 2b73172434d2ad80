package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/finproxy/finproxy/nfq"
	"github.com/spf13/cobra"
)

func newCleanupCmd() *cobra.Command {
	var netns string
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove iptables chains and rules (and lab namespaces) that a crashed finproxy left behind",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := enterNetns(netns); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("cleanup needs root: try sudo")
			}
			w := cmd.OutOrStdout()
			var errs []error
			total := 0
			for _, v6 := range []bool{false, true} {
				name := map[bool]string{false: "iptables", true: "ip6tables"}[v6]
				ipt, err := nfq.NewIPTables(v6)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				removed, err := nfq.Cleanup(ipt)
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s: %s\n", name, r)
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
			if total == 0 && len(errs) == 0 {
				fmt.Fprintln(w, "nothing to clean up")
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&netns, "netns", "", "clean up inside this named network namespace (ip netns)")
	return cmd
}

// extraCleanups are added by other files (lab namespaces, tracefs instances).
var extraCleanups []func() ([]string, error)
