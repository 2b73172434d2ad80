package control_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/finproxy/finproxy/control"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// startServe stands in for `sudo finproxy serve`: a finproxy over a fake kernel and fake
// iptables, behind the API. It returns the API's address.
func startServe() (addr string, stop func()) {
	var api *control.Server
	svc, err := runner.Serve(context.Background(), runner.ServeOptions{
		Logger:   slog.New(slog.DiscardHandler),
		IPT4:     nfq.NewFake(),
		OnRecord: func(r rules.Record) { api.Record(r) },
		OpenQueue: func(ctx context.Context, c nfq.Config, h nfq.Handler) (*nfq.Queue, error) {
			q, _, err := nfq.OpenFake(ctx, c, h)
			return q, err
		},
	})
	if err != nil {
		panic(err)
	}
	api = control.New(control.Options{Backend: svc, Logger: slog.New(slog.DiscardHandler)})
	hs := httptest.NewServer(api)
	return hs.URL, func() { hs.Close(); svc.Close() }
}

// A test switches a fault on for the next connections, checks what it did, and switches
// everything back to pass.
func Example() {
	addr, stop := startServe() // in a real test: finproxy serve, at client.DefaultAddr
	defer stop()
	ctx := context.Background()
	fp := client.New(addr)

	// The server's FIN is retransmitted from LAST_ACK: the client's final ACK is lost.
	rs, err := fp.LoadPreset(ctx, "lost-final-ack", 6379)
	if err != nil {
		panic(err)
	}
	fmt.Println(rs.Name, "on port", rs.Target.Port, "- rules:", rs.Rules[0].Name)

	// ... run the client and the server under test here, then read the counters ...
	cs, err := fp.Counters(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("dropped so far:", cs.Rules[0].Dropped)

	// A rule set is checked as `finproxy check` checks a file.
	_, err = fp.Replace(ctx, []byte("[target]\nport = 6379\n[[rule]]\nname = \"x\"\naction = \"dorp\"\n"))
	var refused *client.Error
	if errors.As(err, &refused) {
		fmt.Println(refused.Status, refused.Problems[0].Line, refused.Problems[0].Key, refused.Problems[0].Message)
	}

	if _, err := fp.Reset(ctx); err != nil {
		panic(err)
	}
	// Output:
	// lost-final-ack on port 6379 - rules: drop-final-ack
	// dropped so far: 0
	// 400 5 rule[1].action unknown action "dorp" (did you mean drop?)
}
