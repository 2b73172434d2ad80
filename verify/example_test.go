package verify_test

import (
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/verify"
)

// Check a lost-FIN run (scenario 3) against its expectations. Here the client's first FIN
// was dropped, but the observer saw no retransmission, and the server's FIN was never
// answered: the run fails, and says why.
func ExampleCheck() {
	cfg, err := config.Parse([]byte(`
[target]
port = 8080

[[rule]]
name = "drop-first-client-fin"
side = "client"
has_flags = "FIN"
nth = 1
action = "drop"

[expect.client]
states = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
retransmits_in = ["FIN_WAIT1"]
exit = 0

[expect.server]
states = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
exit = 0

[[expect.segment]]
side = "client"
has_flags = "FIN"
min = 2
`), "lost-fin.toml")
	if err != nil {
		log.Fatal(err)
	}

	// What the observer reported (observe.Observer.Snapshot), reduced to one connection.
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	client := netip.MustParseAddrPort("198.18.1.2:40112")
	server := netip.MustParseAddrPort("198.18.2.2:8080")
	report := observe.Report{Connections: []observe.Connection{{
		Incarnation: 1,
		FirstSeen:   t0,
		Client: observe.Side{Addr: client, States: []observe.StateEntry{
			{State: observe.SynSent, At: at(0)},
			{State: observe.Established, At: at(1)},
			{State: observe.FinWait1, At: at(10)},
			{State: observe.FinWait2, At: at(220)},
		}},
		Server: observe.Side{Addr: server, States: []observe.StateEntry{
			{State: observe.SynRecv, At: at(1)},
			{State: observe.Established, At: at(1)},
			{State: observe.CloseWait, At: at(220)},
			{State: observe.LastAck, At: at(221)},
		}},
	}}}
	conn, _ := verify.PickConnection(report, netip.AddrPortFrom(client.Addr(), 0), server)

	// The event log: the client's FIN, dropped, and its retransmission.
	records := []rules.Record{
		{Client: client, Server: server, Side: rules.Client, Flags: segment.FIN | segment.ACK, Rule: "drop-first-client-fin", Verdict: rules.Drop},
		{Client: client, Server: server, Side: rules.Client, Flags: segment.FIN | segment.ACK, Verdict: rules.Accept},
	}

	for _, f := range verify.Check(verify.Input{
		Expect:     cfg.Expect,
		Conn:       conn,
		Records:    records,
		ClientExit: 0,
		ServerExit: -1, // still running when the run ended
	}) {
		fmt.Println(f)
	}
	// Output:
	// client states: want ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 → TIME_WAIT in order; saw SYN_SENT → ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 (no TIME_WAIT after FIN_WAIT2)
	// client retransmits: want one in FIN_WAIT1; saw none
	// server states: want ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSE in order; saw SYN_RECV → ESTABLISHED → CLOSE_WAIT → LAST_ACK (no CLOSE after LAST_ACK)
	// server exit: want 0; saw no exit status (unknown)
}
