package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/spf13/cobra"
)

// checkSharedFlags validates the flags that several commands share, the same way for each:
// it runs before every command (the root's PersistentPreRunE), for whichever of these
// flags the command has. A command's own checks come after, in its RunE.
//
//	--duration       0 (until Ctrl-C) or more: run and watch
//	--port           1 to 65535 when given (0 is no port): run, check, lab (one port), watch (a list)
//	--queue          1 to 65535 when given (0 reads as the default queue): run, check
//	--netns          a namespace name as `ip netns` lists it: run, check, cleanup, watch
//	--observe-netns  existing namespaces: run, watch
//	--nice           -20 to 19: run, serve
func checkSharedFlags(cmd *cobra.Command) error {
	fs := cmd.Flags()
	if fs.Lookup("duration") != nil {
		if d, err := fs.GetDuration("duration"); err == nil && d < 0 {
			return fmt.Errorf("--duration %v: want a positive duration (or 0: until Ctrl-C)", d)
		}
	}
	for _, name := range []string{"port", "queue"} {
		f := fs.Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		var values []uint
		switch f.Value.Type() {
		case "uint":
			v, _ := fs.GetUint(name)
			values = []uint{v}
		case "uintSlice":
			values, _ = fs.GetUintSlice(name)
		}
		for _, v := range values {
			if v == 0 || v > 65535 {
				return fmt.Errorf("--%s %d: want 1 to 65535", name, v)
			}
		}
	}
	if f := fs.Lookup("netns"); f != nil && f.Changed {
		if ns := f.Value.String(); ns == "" || ns == "." || ns == ".." || strings.ContainsRune(ns, '/') {
			return fmt.Errorf("--netns %q: want the name of a network namespace, as `ip netns list` shows it", ns)
		}
	}
	if fs.Lookup("nice") != nil {
		if n, err := fs.GetInt("nice"); err == nil && (n < -20 || n > 19) {
			return fmt.Errorf("--nice %d: want -20 to 19", n)
		}
	}
	if fs.Lookup("observe-netns") != nil {
		nss, _ := fs.GetStringSlice("observe-netns")
		if err := checkNamespaces("--observe-netns", nss); err != nil {
			return err
		}
	}
	return nil
}

// flagError makes a flag that does not parse a usage error (exit status 2), for every
// command.
func flagError(_ *cobra.Command, err error) error { return &exitError{2, err} }

// addNiceFlag gives cmd --nice, the packet path's scheduling priority.
func addNiceFlag(cmd *cobra.Command, nice *int) {
	cmd.Flags().IntVar(nice, "nice", runner.DefaultNice, "the nice value of finproxy's threads: above the applications', so the queue keeps up with a busy client (0: theirs)")
}

// applyNice sets the process's nice value; a failure is a warning: finproxy works, but
// may fall behind a busy application (the summary counts what the kernel then dropped).
func applyNice(log *slog.Logger, nice int) {
	if err := runner.SetNice(nice); err != nil {
		log.Warn("finproxy: could not set its priority; under load the kernel queue may drop segments", "err", err)
	}
}
