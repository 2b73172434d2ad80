// Command fpapp runs finproxy's built-in test applications on their own (finproxy runs
// the same code as `finproxy app ...`): fpapp server ... | fpapp client ...
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/finproxy/finproxy/internal/apps"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := apps.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
