package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/finproxy/finproxy/control/client"
	"github.com/spf13/cobra"
)

func newCtlCmd() *cobra.Command {
	var (
		addr, tokenFile, netns string
		port                   uint16
	)
	cmd := &cobra.Command{
		Use:   "ctl COMMAND",
		Short: "Drive a finproxy serve: replace rules, switch them, read counters, follow verdicts",
		Long: `ctl talks to the control API of finproxy serve and prints its answers as JSON.
A refused rule set prints the problems as finproxy check does, and ctl exits with 1.`,
		Example: `  finproxy ctl replace my-faults.toml
  finproxy ctl --netns app preset lost-final-ack --port 6379
  finproxy ctl disable drop-final-ack
  finproxy ctl counters
  finproxy ctl events | head`,
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", client.DefaultAddr, "the API: HOST:PORT, http://HOST:PORT or unix:/PATH")
	cmd.PersistentFlags().StringVar(&tokenFile, "token-file", "", "send the bearer token in this file")
	cmd.PersistentFlags().StringVar(&netns, "netns", "", "reach the API inside this named network namespace")
	connect := func() (*client.Client, error) {
		if err := enterNetns(netns); err != nil {
			return nil, err
		}
		var opts []client.Option
		if tokenFile != "" {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return nil, &exitError{2, fmt.Errorf("--token-file: %w", err)}
			}
			opts = append(opts, client.WithToken(strings.TrimSpace(string(b))))
		}
		return client.New(addr, opts...), nil
	}
	sub := func(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, c *client.Client, args []string) (any, error)) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: args, RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect()
			if err != nil {
				return err
			}
			v, err := run(cmd, c, args)
			if err != nil {
				return ctlError(cmd.ErrOrStderr(), err)
			}
			if v != nil {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			return nil
		}}
	}
	preset := sub("preset NAME", "Put a built-in preset in place", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client.Client, a []string) (any, error) {
		return c.LoadPreset(cmd.Context(), a[0], port)
	})
	preset.Flags().Uint16Var(&port, "port", 0, "replace the preset's target port")
	cmd.AddCommand(
		sub("rules", "Print the rule set in place", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			return c.Rules(cmd.Context())
		}),
		sub("replace FILE", "Replace the rule set by a TOML file (- for stdin)", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client.Client, a []string) (any, error) {
			var b []byte
			var err error
			if a[0] == "-" {
				b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
			} else {
				b, err = os.ReadFile(a[0])
			}
			if err != nil {
				return nil, &exitError{2, err}
			}
			return c.Replace(cmd.Context(), b)
		}),
		sub("enable RULE", "Switch a rule of the set on", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client.Client, a []string) (any, error) {
			return c.Enable(cmd.Context(), a[0], true)
		}),
		sub("disable RULE", "Switch a rule of the set off", cobra.ExactArgs(1), func(cmd *cobra.Command, c *client.Client, a []string) (any, error) {
			return c.Enable(cmd.Context(), a[0], false)
		}),
		preset,
		sub("presets", "List the built-in presets", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			return c.Presets(cmd.Context())
		}),
		sub("reset", "Take every rule out: segments pass", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			return c.Reset(cmd.Context())
		}),
		sub("counters", "Print the per-rule counters and the queue's health", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			return c.Counters(cmd.Context())
		}),
		sub("connections", "Print the connections serve observes (serve --observe), with their timelines", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			return c.Connections(cmd.Context())
		}),
		sub("events", "Print each segment's verdict as a JSON line, until Ctrl-C", cobra.NoArgs, func(cmd *cobra.Command, c *client.Client, _ []string) (any, error) {
			ev, err := c.Events(cmd.Context())
			if err != nil {
				return nil, err
			}
			defer ev.Close()
			enc := json.NewEncoder(cmd.OutOrStdout())
			for {
				e, err := ev.Next()
				switch {
				case errors.Is(err, client.ErrLost):
					fmt.Fprintln(cmd.ErrOrStderr(), "finproxy:", err)
					continue
				case err != nil:
					if cmd.Context().Err() != nil {
						return nil, nil
					}
					return nil, err
				}
				if err := enc.Encode(e); err != nil {
					return nil, err
				}
			}
		}),
	)
	return cmd
}

// ctlError prints an API refusal with its problems, one a line as check prints them.
func ctlError(w io.Writer, err error) error {
	var ae *client.Error
	if !errors.As(err, &ae) || len(ae.Problems) == 0 {
		return err
	}
	for _, p := range ae.Problems {
		pos := fmt.Sprintf("%s:%d:%d: ", p.File, p.Line, p.Col)
		if p.Key != "" {
			pos += p.Key + ": "
		}
		fmt.Fprintln(w, pos+p.Message)
	}
	return &exitError{1, errSilent}
}
