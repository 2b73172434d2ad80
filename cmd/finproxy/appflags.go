package main

import (
	"fmt"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/spf13/cobra"
)

// appFlags are the flags of the commands that run the user's applications in the lab
// (lab, sweep): how long a server serves and how an application is stopped.
type appFlags struct {
	lifetime  string
	stopGrace time.Duration
}

func (a *appFlags) register(cmd *cobra.Command, lifetimeHelp string) {
	cmd.Flags().StringVar(&a.lifetime, "server-lifetime", "", lifetimeHelp)
	cmd.Flags().DurationVar(&a.stopGrace, "stop-grace", 0,
		fmt.Sprintf("time between SIGTERM and SIGKILL to an application's process group (default %s)", config.DefaultStopGrace))
}

// parse checks the flags; zero values mean "not given" (the config's or the default).
func (a *appFlags) parse(cmd *cobra.Command) (config.ServerLifetime, time.Duration, error) {
	var lt config.ServerLifetime
	if a.lifetime != "" {
		var err error
		if lt, err = config.ParseServerLifetime(a.lifetime); err != nil {
			return "", 0, &exitError{2, fmt.Errorf("--server-lifetime: %w", err)}
		}
	}
	if cmd.Flags().Changed("stop-grace") && (a.stopGrace <= 0 || a.stopGrace > time.Minute) {
		return "", 0, &exitError{2, fmt.Errorf("--stop-grace %s: want more than 0 and at most 1m", a.stopGrace)}
	}
	return lt, a.stopGrace, nil
}
