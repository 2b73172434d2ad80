package main

import (
	"github.com/finproxy/finproxy/internal/apps"
	"github.com/spf13/cobra"
)

// newAppCmd runs the built-in test applications.
func newAppCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "app server|client [flags]",
		Short:              "Built-in test applications (used by demo and lab)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := apps.Main(cmd.Context(), args, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return &exitError{code: code, err: errSilent}
			}
			return nil
		},
	}
}
