// Command finproxy injects TCP teardown faults into real applications through an NFQUEUE
// hook and reports what both sides went through.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// errSilent is an error whose message was already printed.
var errSilent = errors.New("")

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	// A hangup (a closed terminal, a lost ssh session) stops every command like Ctrl-C:
	// with its teardown.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	root := newRoot()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil && ee.err.Error() != "" {
				fmt.Fprintln(os.Stderr, "finproxy:", ee.err)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "finproxy:", err)
		os.Exit(1)
	}
}

type globalFlags struct {
	verbose bool
	json    bool
}

func newRoot() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "finproxy",
		Short: "Fault-injecting TCP tool: drop, delay, hold and merge SYN/FIN/ACK/RST segments of real applications",
		Long: `finproxy sits in the kernel's packet path (iptables NFQUEUE), pushes real, unmodified
applications into rare TCP teardown situations (lost FIN, lost final ACK, simultaneous
close, three-way close, FIN_WAIT2 hangs, CLOSE_WAIT leaks, ...) and reports what happened.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "debug logging")
	root.PersistentFlags().BoolVar(&g.json, "log-json", false, "log as JSON on stderr")
	root.SetFlagErrorFunc(flagError)
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		level := slog.LevelInfo
		if g.verbose {
			level = slog.LevelDebug
		}
		var h slog.Handler
		if g.json {
			h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
		} else {
			h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
		}
		slog.SetDefault(slog.New(h))
		if err := checkSharedFlags(cmd); err != nil {
			return &exitError{2, err}
		}
		return nil
	}
	// Every command, in one place.
	root.AddCommand(newRunCmd(), newCheckCmd(), newCleanupCmd(), newWatchCmd(), newLabCmd(), newDemoCmd(),
		newSweepCmd(), newAppCmd(), newWatchdogCmd(), newServeCmd(), newCtlCmd())
	return root
}

// surviveClosedOutput keeps a command that holds hooks, namespaces or applications alive
// when its stdout or stderr is closed (`finproxy run ... 2>&1 | head -2`): with SIGPIPE
// caught (not ignored, which the programs it starts would inherit), writes to them fail
// and the command goes on until it is stopped, then tears down as usual.
func surviveClosedOutput() { signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) }
