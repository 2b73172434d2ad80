package main

import (
	"strings"
	"testing"
)

// Every command validates the flags it shares with others the same way, before it does
// anything: the same value gets the same message and exit status 2 whichever command has
// it. Before, run took --duration -5s (and ran until killed) while watch refused it, and a
// flag that did not parse was exit 2 for watch but 1 for the others.
//
// The config is one that does not exist, so that no command gets as far as the network.
func TestSharedFlags(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		cmds  []string
		want  string
	}{
		{[]string{"--duration", "-5s"}, []string{"run", "watch"}, "--duration -5s: want a positive duration (or 0: until Ctrl-C)"},
		{[]string{"--duration", "5x"}, []string{"run", "watch"}, `invalid argument "5x" for "--duration" flag`},
		{[]string{"--port", "0"}, []string{"run", "check", "lab", "watch"}, "--port 0: want 1 to 65535"},
		{[]string{"--port", "65536"}, []string{"run", "check", "lab", "watch"}, "--port 65536: want 1 to 65535"},
		{[]string{"--port", "-1"}, []string{"run", "check", "lab", "watch"}, `invalid argument "-1" for "--port" flag`},
		{[]string{"--queue", "0"}, []string{"run", "check"}, "--queue 0: want 1 to 65535"},
		{[]string{"--netns", "../../proc/1/ns/net"}, []string{"run", "check", "cleanup", "watch"}, `--netns "../../proc/1/ns/net": want the name of a network namespace`},
		{[]string{"--nice", "-21"}, []string{"run", "serve"}, "--nice -21: want -20 to 19"},
		{[]string{"--nice", "20"}, []string{"run", "serve"}, "--nice 20: want -20 to 19"},
		{[]string{"--observe-netns", "fptest-no-such-ns"}, []string{"run", "watch"}, "--observe-netns fptest-no-such-ns: no such network namespace"},
	} {
		for _, c := range tc.cmds {
			args := append([]string{c}, tc.flags...)
			if c != "cleanup" && c != "watch" {
				args = append(args, "-c", "no-such-config")
			}
			if c == "watch" && tc.flags[0] != "--port" {
				args = append(args, "--port", "8080")
			}
			out, code := runCLI(t, args...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Errorf("%s: exit %d, output %q; want exit 2 and %q", strings.Join(args, " "), code, out, tc.want)
			}
		}
	}
}
