// Command fpbench is finproxy's benchmark (issue 7). It builds a client, a router and a
// server network namespace (package lab) and measures, in one run and alternating the
// variants, three workloads through the router:
//
//   - direct: the router only forwards;
//   - finproxy: `finproxy run`'s pipeline on the router's FORWARD path with a rule set
//     that matches the flows' SYN, FIN and RST segments and passes everything,
//     observation of both ends on;
//   - toxiproxy: Shopify Toxiproxy 2.12 (no toxics) in the router namespace; the client
//     connects to the router's address and Toxiproxy opens a second connection to the server.
//
// Workloads: bulk transfer (one connection, MB/s), connection churn (8 parallel clients
// open, send 1 byte, close; connections/s; their connect times too) and request latency
// (64-byte request and response on one connection, p50/p99). Then finproxy alone: verdict
// latency, the accuracy of a delay rule, queue drops, resident memory with 10k open
// connections and the engine's memory over 1M connections.
//
// Usage (as root; scripts/bench builds it and installs Toxiproxy):
//
//	fpbench [--reps 5] [--duration 2s] [--json FILE] [--smoke]
//
// It prints a table of medians with the ratios and the targets, and with --json writes
// every number. Everything it creates (namespaces, iptables rules, processes) is removed
// at the end, also on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var err error
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "_serve":
			err = serve(os.Args[2:])
		case "_client":
			err = client(os.Args[2:])
		case "_proxy":
			err = proxy(os.Args[2:])
		case "_engine-churn":
			err = engineChurn(os.Args[2:])
		default:
			err = orchestrate(os.Args[1:])
		}
	} else {
		err = orchestrate(nil)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fpbench:", err)
		os.Exit(1)
	}
}

func ctxBackground() context.Context { return context.Background() }

// signalContext ends on SIGINT, SIGTERM or SIGHUP (a closed terminal), so that the
// benchmark removes what it made. SIGPIPE is ignored: a closed stdout or stderr (`fpbench
// | head`) makes writes fail instead of killing the benchmark before its teardown.
func signalContext() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGPIPE)
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
}
