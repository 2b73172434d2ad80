package apps

import (
	"context"
	"fmt"
	"io"
)

// Exit codes of Main.
const (
	ExitOK    = 0 // every connection did what its mode expects
	ExitFail  = 1 // some connection did not (details on stderr and in the JSON lines)
	ExitUsage = 2 // bad command line
)

// Main runs the application named by args[0], "server" or "client", with the flags in
// args[1:], and returns the process exit code. ctx ends the application early (the CLI
// cancels it on SIGINT/SIGTERM). Records and the server's ready line go to stdout, errors
// to stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "server":
		return serverMain(ctx, args[1:], stdout, stderr)
	case "client":
		return clientMain(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "unknown application %q\n%s", args[0], usage)
	return ExitUsage
}

const usage = `usage: app server --listen ADDR:PORT --mode MODE [flags]
       app client --connect ADDR:PORT --mode MODE [flags]
Run "app server -h" or "app client -h" for the modes and flags.
`
