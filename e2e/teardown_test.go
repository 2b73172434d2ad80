package e2e

import (
	"testing"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// apps are the application pairs a scenario is tested with: the built-in Go programs, and
// Debian's socat as a third-party server and client.
type apps struct {
	name           string
	server, client []string
	ready          string
	tool           string // a program the pair needs on PATH
	mustMerge      bool   // three-way close: the server's pure ACK must have been merged
}

// closeFirstApps: the client sends and closes first, the server closes after reading EOF.
var closeFirstApps = []apps{
	{name: "builtin",
		server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "echo-close", "--count", "1"),
		client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "send-close", "--bytes", "1000", "--count", "1")},
	{name: "socat", tool: "socat", ready: "listening on",
		// Echo server: on the client's FIN, cat sees EOF, exits, and socat closes.
		server: []string{"socat", "-d", "-d", "TCP-LISTEN:{port},bind={server_addr},reuseaddr", "EXEC:cat"},
		// Client with an empty stdin: it shuts its side down at once (FIN), then reads to EOF.
		client: []string{"socat", "-", "TCP:{server_addr}:{port}"}},
}

func TestLostFIN(t *testing.T) {
	for _, a := range closeFirstApps {
		t.Run(a.name, func(t *testing.T) {
			if a.tool != "" {
				nstest.RequireTool(t, a.tool)
			}
			topo := newLab(t)
			res := runScenario(t, topo, scenario.Spec{Config: "lost-fin", Server: a.server, Client: a.client, ServerReady: a.ready})
			cf := fins(res.Records, rules.Client)
			if len(cf) < 2 {
				t.Fatalf("the client's FIN was seen %d times, want at least 2 (dropped, then retransmitted)", len(cf))
			}
			if cf[0].Verdict != rules.Drop || cf[0].Rule != "drop-first-client-fin" {
				t.Errorf("first client FIN: verdict %s by rule %q, want drop by drop-first-client-fin", cf[0].Verdict, cf[0].Rule)
			}
			if cf[1].Verdict != rules.Accept {
				t.Errorf("retransmitted client FIN: verdict %s, want accept", cf[1].Verdict)
			}
			if cf[1].Seq != cf[0].Seq {
				t.Errorf("second client FIN has seq %d, first %d: not a retransmission", cf[1].Seq, cf[0].Seq)
			}
			// The connection still closes: the server saw EOF (only the retransmitted FIN
			// could tell it) and closed, and both applications succeeded.
			sf := fins(res.Records, rules.Server)
			if len(sf) == 0 || sf[0].Verdict != rules.Accept {
				t.Errorf("no accepted server FIN: the connection did not close")
			}
			if len(sf) > 0 && sf[0].Time < cf[1].Time {
				t.Errorf("the server closed before the client's retransmitted FIN arrived")
			}
			if res.ClientErr != nil || res.ServerErr != nil {
				t.Errorf("applications failed: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
			}
		})
	}
}

func TestLostFinalACK(t *testing.T) {
	for _, a := range closeFirstApps {
		t.Run(a.name, func(t *testing.T) {
			if a.tool != "" {
				nstest.RequireTool(t, a.tool)
			}
			topo := newLab(t)
			res := runScenario(t, topo, scenario.Spec{Config: "lost-final-ack", Server: a.server, Client: a.client, ServerReady: a.ready})
			sf := fins(res.Records, rules.Server)
			if len(sf) < 2 {
				t.Fatalf("the server's FIN was seen %d times, want at least 2 (retransmitted from LAST_ACK)", len(sf))
			}
			if sf[1].Seq != sf[0].Seq {
				t.Errorf("second server FIN has seq %d, first %d: not a retransmission", sf[1].Seq, sf[0].Seq)
			}
			// The client's ACKs of the server's FIN: the first dropped, a later one (from
			// TIME_WAIT, answering the retransmission) accepted.
			var acks []rules.Record
			for _, r := range res.Records {
				if r.Side == rules.Client && r.Flags == segment.ACK && r.Len == 0 && r.Ack == sf[0].Seq+1 {
					acks = append(acks, r)
				}
			}
			if len(acks) < 2 {
				t.Fatalf("client ACKs of the server's FIN seen %d times, want 2 (the dropped one and the re-ACK)", len(acks))
			}
			if acks[0].Verdict != rules.Drop || acks[0].Rule != "drop-final-ack" {
				t.Errorf("first final ACK: verdict %s by %q, want drop by drop-final-ack", acks[0].Verdict, acks[0].Rule)
			}
			if acks[1].Verdict != rules.Accept || acks[1].Time < sf[1].Time {
				t.Errorf("re-ACK: verdict %s, queued before the retransmitted FIN: %v", acks[1].Verdict, acks[1].Time < sf[1].Time)
			}
			if res.ClientErr != nil || res.ServerErr != nil {
				t.Errorf("applications failed: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
			}
		})
	}
}

func TestSimultaneousClose(t *testing.T) {
	topo := newLab(t)
	res := runScenario(t, topo, scenario.Spec{Config: "simultaneous-close",
		Server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "simultaneous", "--count", "1"),
		Client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "request-read-close", "--count", "1")})
	cf, sf := fins(res.Records, rules.Client), fins(res.Records, rules.Server)
	if len(cf) == 0 || len(sf) == 0 {
		t.Fatalf("client FINs %d, server FINs %d: want both", len(cf), len(sf))
	}
	first, second := cf[0], sf[0]
	if second.Time < first.Time {
		first, second = second, first
	}
	// The first FIN waited in finproxy until the second had been seen, then both went on.
	if first.Rule == "" || first.Action != "hold" {
		t.Errorf("first FIN (%s) was not held: rule %q action %q", first.Side, first.Rule, first.Action)
	}
	if first.VerdictTime < second.Time {
		t.Errorf("first FIN (%s) released at %d, before the %s FIN was seen at %d", first.Side, first.VerdictTime, second.Side, second.Time)
	}
	if first.Verdict != rules.Accept || second.Verdict != rules.Accept {
		t.Errorf("verdicts %s/%s, want both accept", first.Verdict, second.Verdict)
	}
	// Neither FIN acknowledges the other: they crossed (this is what makes CLOSING).
	if second.Ack == first.Seq+1 {
		t.Errorf("the %s FIN acknowledges the %s FIN: not a simultaneous close", second.Side, first.Side)
	}
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Errorf("applications failed: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
}

func TestThreeWayClose(t *testing.T) {
	// The built-in server closes 100 ms after EOF: its kernel's delayed ACK of the client's
	// FIN (about 40 ms) leaves first as a pure ACK, which finproxy must merge into the FIN.
	delayed := closeFirstApps[0]
	delayed.name = "builtin-close-delay"
	delayed.server = builtin("server", "--listen", "{server_addr}:{port}", "--mode", "echo-close", "--count", "1", "--close-delay", "100ms")
	delayed.mustMerge = true
	for _, a := range append([]apps{delayed}, closeFirstApps...) {
		t.Run(a.name, func(t *testing.T) {
			if a.tool != "" {
				nstest.RequireTool(t, a.tool)
			}
			topo := newLab(t)
			res := runScenario(t, topo, scenario.Spec{Config: "three-way-close", Server: a.server, Client: a.client, ServerReady: a.ready})
			cf, sf := fins(res.Records, rules.Client), fins(res.Records, rules.Server)
			if len(cf) != 1 || len(sf) != 1 {
				t.Fatalf("client FINs %d, server FINs %d: want one each", len(cf), len(sf))
			}
			if sf[0].Ack != cf[0].Seq+1 {
				t.Errorf("the server's FIN acks %d, want the client's FIN (%d): it must carry the acknowledgment", sf[0].Ack, cf[0].Seq+1)
			}
			// On the wire after the client's FIN: the server's FIN|ACK and the client's
			// last ACK. A pure ACK of the client's FIN from the server may have been
			// produced by its kernel, but it must not have left finproxy.
			for _, r := range res.Records {
				if r.Side == rules.Server && r.Flags == segment.ACK && r.Len == 0 && r.Ack == cf[0].Seq+1 && r.Verdict == rules.Accept {
					t.Errorf("the server's pure ACK of the client's FIN passed (held %dns, rule %q): four segments, not three", r.HeldNS, r.Rule)
				}
			}
			if a.mustMerge {
				merged := false
				for _, r := range res.Records {
					if r.Side == rules.Server && r.Flags == segment.ACK && r.Ack == cf[0].Seq+1 &&
						r.Action == "merge" && r.Verdict == rules.Drop && r.VerdictTime >= sf[0].Time {
						merged = true
					}
				}
				if !merged {
					t.Errorf("no pure ACK of the client's FIN was held and dropped when the server's FIN came: the merge did not happen")
				}
			}
			if res.ClientErr != nil || res.ServerErr != nil {
				t.Errorf("applications failed: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
			}
		})
	}
}
