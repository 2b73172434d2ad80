package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newCheckCmd() *cobra.Command {
	var (
		tf      targetFlags
		cfgPath string
	)
	cmd := &cobra.Command{
		Use:   "check -c CONFIG",
		Short: "Validate a config without touching the network (no root needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return &exitError{2, fmt.Errorf("check: -c CONFIG is required")}
			}
			loaded, err := loadConfig(cmd.Context(), cfgPath, cmd.InOrStdin())
			if err != nil {
				return &exitError{1, err}
			}
			cfg := &loaded.Config
			if err := tf.apply(cfg); err != nil {
				return &exitError{1, err}
			}
			w := cmd.OutOrStdout()
			ports := fmt.Sprintf("port %d", cfg.Target.Port)
			for _, p := range cfg.Target.Ports {
				ports += fmt.Sprintf(", %d", p)
			}
			fmt.Fprintf(w, "%s: ok: %q, %d rules, %s hook, %s, queue %d, queues %s segments\n",
				configName(cfgPath), cfg.Name, len(cfg.Rules), hookOf(cfg), ports, queueOf(cfg), cfg.QueueScope())
			for _, r := range cfg.Rules {
				fmt.Fprintf(w, "  %-24s %s\n", r.Name, r.ActionName)
			}
			if need, why := cfg.HandshakeNeed(); need {
				fmt.Fprintf(w, "  handshake queued: %s\n", why)
			} else {
				fmt.Fprintf(w, "  handshake not queued (no SYN, no SYN|ACK): %s\n", why)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", configUsage)
	tf.add(cmd)
	return cmd
}
