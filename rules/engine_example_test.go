package rules_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// printSink stands in for the NFQUEUE: it prints each verdict.
type printSink struct{}

func (printSink) Verdict(id uint32, v rules.Verdict) error {
	fmt.Printf("packet %d: %s\n", id, v)
	return nil
}

// Scenario 3 (lost FIN): the client's first FIN is dropped, its retransmission passes.
func ExampleEngine() {
	drop, _ := rules.NewAction("drop")
	cfg := &rules.Config{
		Name:   "lost-fin",
		Target: rules.Target{Port: 8080},
		Rules: []*rules.Rule{{
			Name:       "drop-first-client-fin",
			Match:      rules.Match{Side: rules.Client, HasFlags: segment.FIN, Nth: 1},
			ActionName: "drop",
			Action:     drop,
		}},
	}
	clock := rules.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	eng := rules.NewEngine(cfg, rules.Options{
		Sink:  printSink{},
		Clock: clock,
		Log: func(r rules.Record) {
			fmt.Printf("  %s %s seq=%d %s", r.Side, r.Flags, r.Seq, r.Verdict)
			if r.Rule != "" {
				fmt.Printf(" by %s/%s", r.Rule, r.Action)
			}
			fmt.Println()
		},
	})
	defer eng.Close()

	client := netip.MustParseAddrPort("10.0.0.1:40000")
	server := netip.MustParseAddrPort("10.0.0.2:8080")
	segs := []segment.Segment{
		{Src: client, Dst: server, Flags: segment.SYN, Seq: 1000},
		{Src: server, Dst: client, Flags: segment.SYN | segment.ACK, Seq: 5000, Ack: 1001},
		{Src: client, Dst: server, Flags: segment.ACK, Seq: 1001, Ack: 5001},
		{Src: client, Dst: server, Flags: segment.FIN | segment.ACK, Seq: 1001, Ack: 5001},
		{Src: client, Dst: server, Flags: segment.FIN | segment.ACK, Seq: 1001, Ack: 5001}, // retransmitted
	}
	for i, s := range segs {
		eng.Handle(rules.Packet{ID: uint32(i + 1), Time: clock.Now(), Seg: s})
		clock.Advance(200 * time.Millisecond)
	}
	fmt.Printf("%+v\n", eng.Counters()[0])
	// Output:
	// packet 1: accept
	//   client SYN seq=1000 accept
	// packet 2: accept
	//   server SYN|ACK seq=5000 accept
	// packet 3: accept
	//   client ACK seq=1001 accept
	// packet 4: drop
	//   client FIN|ACK seq=1001 drop by drop-first-client-fin/drop
	// packet 5: accept
	//   client FIN|ACK seq=1001 accept
	// {Rule:drop-first-client-fin Matched:1 Passed:0 Dropped:1 Delayed:0 Held:0 Merged:0 Modified:0 Injected:0 Panicked:0}
}
