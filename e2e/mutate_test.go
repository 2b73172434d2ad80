package e2e

// End-to-end tests of the actions that rewrite and inject segments (issue 5), with real
// applications in lab namespaces: what reached the peer, what its kernel did with it
// (observer, TCP counters of the namespace), what the application saw. Their logs are
// the measurements the presets' comments report (go test -v).

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// presetApps returns the [lab] server and client of a preset.
func presetApps(t *testing.T, preset string) (server, client []string) {
	t.Helper()
	data, path, ok := configs.Read(preset)
	if !ok {
		t.Fatalf("no preset %s", preset)
	}
	cfg, err := config.Parse(data, path)
	if err != nil || cfg.Lab == nil {
		t.Fatalf("%s: %v (lab %v)", preset, err, cfg)
	}
	return cfg.Lab.Server, cfg.Lab.Client
}

// writeConfig writes a config into the test's temporary directory.
func writeConfig(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tcpCounters reads the TCP counters of a lab namespace (nstat's names: TcpExtPAWSEstab).
func tcpCounters(t *testing.T, topo *lab.Topology, role string) map[string]int64 {
	t.Helper()
	m, err := topo.TCPCounters(role)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// counterDelta is after - before for the named counters, as "name=+n" (n != 0 only).
func counterDelta(before, after map[string]int64, names ...string) map[string]int64 {
	d := map[string]int64{}
	for _, n := range names {
		if v := after[n] - before[n]; v != 0 {
			d[n] = v
		}
	}
	return d
}

var twCounters = []string{"TcpExtPAWSEstab", "TcpExtPAWSTimewait", "TcpExtTWKilled", "TcpExtTWRecycled", "TcpExtTCPChallengeACK",
	"TcpExtTCPACKSkippedPAWS", "TcpExtTCPACKSkippedTimeWait", "TcpExtTCPDSACKOldSent"}

// incarnations returns the observed connections between the client at addr and the
// server, by first sight.
func incarnations(rep *observe.Report, client netip.AddrPort) []observe.Connection {
	var out []observe.Connection
	for _, c := range rep.Connections {
		if c.Client.Addr == client {
			out = append(out, c)
		}
	}
	return out
}

func describeConn(c observe.Connection) string {
	side := func(s observe.Side) string {
		return fmt.Sprintf("%v %v retransmits %d resets sent %d received %d", s.Addr, stateList(s), len(s.Retransmits), len(s.ResetsSent), len(s.ResetsReceived))
	}
	return fmt.Sprintf("incarnation %d: client %s; server %s", c.Incarnation, side(c.Client), side(c.Server))
}

// observedRun runs one scenario with the observer and logs what both kernels showed.
func observedRun(t *testing.T, topo *lab.Topology, spec scenario.Spec) *scenario.Result {
	t.Helper()
	spec.Observe = true
	spec.LeakThreshold = time.Second
	res := runScenario(t, topo, spec)
	if res.Observed == nil {
		t.Fatalf("nothing observed: %v", res.ObserveWarnings)
	}
	for _, c := range res.Observed.Connections {
		t.Logf("observed %s", describeConn(c))
	}
	return res
}

// Scenario 7, fin-with-data: one segment carries the server's reply and its FIN; the
// client's acknowledgment is seq + len + 1; the reply arrives intact (the client checks
// it); nothing is retransmitted.
func TestMutateFINWithData(t *testing.T) {
	topo := newLab(t)
	server, client := presetApps(t, "fin-with-data")
	res := observedRun(t, topo, scenario.Spec{Config: "fin-with-data", Server: server, Client: client})
	var merged *rules.Record
	for i, r := range res.Records {
		if r.Side == rules.Server && r.Flags.Has(segment.FIN) && r.Verdict == rules.Accept {
			if merged != nil {
				t.Fatalf("a second FIN of the server left: %+v", r)
			}
			merged = &res.Records[i]
		}
	}
	if merged == nil || !merged.Modified || merged.Len == 0 || !merged.Flags.Has(segment.PSH) {
		t.Fatalf("no merged segment with data and FIN: %+v\n%s", merged, formatRecords(res.Records))
	}
	want := merged.Seq + uint32(merged.Len) + 1
	acked := false
	for _, r := range res.Records {
		if r.Side == rules.Client && r.Time > merged.VerdictTime && r.Flags.Has(segment.ACK) {
			if r.Ack != want {
				t.Errorf("the client's first segment after the merged one acknowledges %d, want seq + len + 1 = %d", r.Ack, want)
			}
			acked = true
			break
		}
	}
	if !acked {
		t.Error("the client never acknowledged the merged segment")
	}
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Errorf("applications: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
	conn := labConn(t, topo, 8080, res.Observed.Connections)
	if len(conn.Server.Retransmits) != 0 || len(conn.Client.Retransmits) != 0 {
		t.Errorf("retransmissions: %s", describeConn(conn))
	}
}

// Scenario 14 with toward = "both": both applications see ECONNRESET at once, both
// sockets go from ESTABLISHED to CLOSE with a reset received and no FIN.
func TestMutateResetBoth(t *testing.T) {
	topo := newLab(t)
	cfg := writeConfig(t, "reset-both", `
name = "reset-both"
[target]
port = 8080
[[rule]]
name = "reset-both"
side = "client"
flags = "pure-ack"
phase = "established"
nth = 1
action = "inject-rst"
toward = "both"
`)
	res := observedRun(t, topo, scenario.Spec{Config: cfg,
		Server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "reply-wait-close"),
		Client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "expect-reset")})
	var injected []rules.Record
	for _, r := range res.Records {
		if r.Injected {
			injected = append(injected, r)
		}
		if r.Flags.Has(segment.FIN) {
			t.Errorf("a FIN: %+v", r)
		}
	}
	if len(injected) != 2 || injected[0].Side != rules.Server || injected[1].Side != rules.Client {
		t.Fatalf("injected %+v", injected)
	}
	if res.ClientErr != nil {
		t.Errorf("client: %v (%s)", res.ClientErr, res.ClientOutput)
	}
	if !strings.Contains(res.ServerOutput, `"error":"ECONNRESET"`) {
		t.Errorf("the server did not see ECONNRESET: %s", res.ServerOutput)
	}
	conn := labConn(t, topo, 8080, res.Observed.Connections)
	for name, s := range map[string]observe.Side{"client": conn.Client, "server": conn.Server} {
		st := stateList(s)
		if len(s.ResetsReceived) == 0 || st[len(st)-1] != observe.Close || stateEntry(s, observe.FinWait1) != nil {
			t.Errorf("%s: %s", name, describeConn(conn))
		}
	}
}

// Scenario 11, time-wait-reuse: the second connection's SYN is accepted by the server's
// TIME_WAIT socket; the server's new ISN is the old connection's next sequence number +
// 65537; the observer sees a second incarnation of the 4-tuple on the server.
func TestMutateTimeWaitReuse(t *testing.T) {
	topo := newLab(t)
	server, client := presetApps(t, "time-wait-reuse")
	before := tcpCounters(t, topo, lab.RoleServer)
	res := observedRun(t, topo, scenario.Spec{Config: "time-wait-reuse", Server: server, Client: client})
	delta := counterDelta(before, tcpCounters(t, topo, lab.RoleServer), twCounters...)
	t.Logf("server TcpExt counters: %v", delta)
	var synacks []rules.Record
	var fin *rules.Record
	finSeqs := map[uint32]bool{} // the server's FINs seen so far, by sequence number
	for i, r := range res.Records {
		switch {
		case r.Side == rules.Server && r.Flags == segment.SYN|segment.ACK:
			synacks = append(synacks, r)
		case r.Side == rules.Client && r.Flags.Has(segment.RST) && i > 0 && resentFIN(res.Records[i-1], finSeqs):
			// The server's FIN sent again (a tail loss probe on a loaded machine) reached the
			// client after its socket closed: a RST answers it, outside either connection.
			t.Logf("a RST answering the server's FIN sent again: %+v", r)
		case r.Flags.Has(segment.RST):
			t.Errorf("a RST: %+v\n%s", r, formatRecords(res.Records))
		}
		if r.Side == rules.Server && r.Flags.Has(segment.FIN) && r.Verdict == rules.Accept && fin == nil {
			fin = &res.Records[i]
		}
		if r.Side == rules.Server && r.Flags.Has(segment.FIN) {
			finSeqs[r.Seq+uint32(r.Len)] = true
		}
	}
	if len(synacks) != 2 || fin == nil {
		t.Fatalf("%d SYN-ACKs, first FIN %v\n%s", len(synacks), fin, formatRecords(res.Records))
	}
	if synacks[0].Client != synacks[1].Client {
		t.Fatalf("the two connections are on %v and %v: not one 4-tuple", synacks[0].Client, synacks[1].Client)
	}
	sndNxt := fin.Seq + uint32(fin.Len) + 1
	if synacks[1].Seq != sndNxt+65537 {
		t.Errorf("the new incarnation's ISN %d, want the old connection's next sequence number %d + 65537 (TIME_WAIT accepted the SYN)", synacks[1].Seq, sndNxt)
	} else {
		t.Logf("the TIME_WAIT socket accepted the SYN: new ISN %d = %d + 65537", synacks[1].Seq, sndNxt)
	}
	incs := incarnations(res.Observed, synacks[0].Client)
	if len(incs) < 2 {
		t.Fatalf("%d incarnations observed on %v, want 2", len(incs), synacks[0].Client)
	}
	second := incs[len(incs)-1]
	if stateEntry(second.Server, observe.SynRecv) == nil || stateEntry(second.Server, observe.Established) == nil {
		t.Errorf("the second incarnation's server: %s", describeConn(second))
	}
	if delta["TcpExtPAWSTimewait"] != 0 {
		t.Errorf("the SYN was refused by the TIME_WAIT socket's PAWS check: %v", delta)
	}
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Errorf("applications: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
}

// resentFIN reports whether r is a FIN of the server whose sequence number an earlier FIN
// had (finSeqs holds the sequence number of each FIN flag seen).
func resentFIN(r rules.Record, finSeqs map[uint32]bool) bool {
	return r.Side == rules.Server && r.Flags.Has(segment.FIN) && r.Verdict == rules.Accept && finSeqs[r.Seq+uint32(r.Len)] && r.Len == 0
}

// Scenario 12, old-duplicate: the first connection's request, replayed into the second
// incarnation, is rejected by PAWS on the server (TcpExtPAWSEstab + 1), answered with a
// duplicate ACK of the new connection, and never reaches the application.
func TestMutateOldDuplicate(t *testing.T) {
	topo := newLab(t)
	server, client := presetApps(t, "old-duplicate")
	before := tcpCounters(t, topo, lab.RoleServer)
	res := observedRun(t, topo, scenario.Spec{Config: "old-duplicate", Server: server, Client: client})
	delta := counterDelta(before, tcpCounters(t, topo, lab.RoleServer), twCounters...)
	t.Logf("server TcpExt counters: %v", delta)
	var copyRec *rules.Record
	var syns []rules.Record
	for i, r := range res.Records {
		if r.Injected {
			copyRec = &res.Records[i]
		}
		if r.Side == rules.Client && r.Flags == segment.SYN {
			syns = append(syns, r)
		}
	}
	if copyRec == nil || len(syns) != 2 {
		t.Fatalf("copy %v, %d SYNs\n%s", copyRec, len(syns), formatRecords(res.Records))
	}
	if copyRec.Seq != syns[0].Seq+1 || copyRec.Time > syns[1].Time {
		t.Errorf("the copy (seq %d, made at %d) is not the first connection's request (ISN %d, second SYN at %d)",
			copyRec.Seq, copyRec.Time, syns[0].Seq, syns[1].Time)
	}
	// The server's answer: a pure ACK of the new connection, right after the copy.
	answered := false
	for _, r := range res.Records {
		if r.Side == rules.Server && r.Time >= copyRec.VerdictTime && r.Time < copyRec.VerdictTime+int64(50*time.Millisecond) {
			if r.Flags != segment.ACK || r.Len != 0 || r.Ack != syns[1].Seq+1 {
				t.Errorf("the server's answer to the copy: %+v, want a pure ACK of %d", r, syns[1].Seq+1)
			}
			answered = true
			break
		}
	}
	if !answered {
		t.Error("the server did not answer the old segment")
	}
	if delta["TcpExtPAWSEstab"] != 1 {
		t.Errorf("TcpExtPAWSEstab went up by %d, want 1 (the copy rejected by PAWS)", delta["TcpExtPAWSEstab"])
	}
	// The application's view: the second connection read its own request only.
	if !strings.Contains(res.ServerOutput, `"conn":1`) || !recordHas(res.ServerOutput, 1, `"received":10`) {
		t.Errorf("the server's second connection did not read exactly its request:\n%s", res.ServerOutput)
	}
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Errorf("applications: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
	if incs := incarnations(res.Observed, syns[0].Client); len(incs) < 2 {
		t.Errorf("%d incarnations observed", len(incs))
	} else if s := incs[len(incs)-1].Server; len(s.ResetsReceived)+len(s.ResetsSent) != 0 {
		t.Errorf("resets in the second incarnation: %s", describeConn(incs[len(incs)-1]))
	}
}

// recordHas reports whether the JSON record of connection conn in an application's
// output contains want.
func recordHas(out string, conn int, want string) bool {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, fmt.Sprintf(`"conn":%d,`, conn)) && strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// reuse-tuple, run the lab's number of times: a second connection from another port is
// rewritten onto the 4-tuple the server holds in TIME_WAIT. The client's timestamp offset
// belongs to its real 4-tuple, so PAWS on the TIME_WAIT socket accepts the SYN or not at
// random; either way both connections work. The outcomes are counted, with the server's
// TcpExt counters of each, and logged.
func TestMutateReuseTuple(t *testing.T) {
	topo := newLab(t)
	runs := labRuns(t)
	cfg := writeConfig(t, "reuse-tuple", `
name = "reuse-tuple"
[target]
port = 8080
[[rule]]
name = "reply-carries-fin"
side = "server"
action = "merge-data-fin"
timeout = "500ms"
[[rule]]
name = "reuse-time-wait-tuple"
side = "client"
flags = "SYN"
action = "reuse-tuple"
`)
	outcomes := map[string]int{}
	for k := 1; k <= runs; k++ {
		before := tcpCounters(t, topo, lab.RoleServer)
		res := runScenario(t, topo, scenario.Spec{Config: cfg,
			Server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "reply-close", "--count", "2"),
			Client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "request-close", "--count", "2", "--pause", "300ms")})
		delta := counterDelta(before, tcpCounters(t, topo, lab.RoleServer), twCounters...)
		outcome, err := reuseOutcome(res.Records)
		switch {
		case err != nil:
			t.Errorf("run %d: %v\n%s", k, err, formatRecords(res.Records))
		case outcome == "accepted" && delta["TcpExtPAWSTimewait"] != 0,
			outcome == "assassinated" && delta["TcpExtPAWSTimewait"] != 1:
			t.Errorf("run %d: %s, but the server's counters say %v", k, outcome, delta)
		}
		if res.ClientErr != nil || res.ServerErr != nil {
			t.Errorf("run %d: applications: client %v (%s), server %v (%s)", k, res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
		}
		outcomes[outcome]++
		t.Logf("run %d: %s, server counters %v", k, outcome, delta)
	}
	t.Logf("reuse-tuple over %d runs: the TIME_WAIT socket accepted the SYN %d times (SYN-ACK with ISN = old snd_nxt + 65537); "+
		"%d times PAWS rejected it (the SYN's timestamp older: TcpExtPAWSTimewait), the TIME_WAIT socket answered with an ACK of the old connection, "+
		"the client's RST (its seq that ACK's ack, in window) killed it and the client's next SYN opened a fresh connection",
		runs, outcomes["accepted"], outcomes["assassinated"])
}

// reuseOutcome classifies a reuse-tuple run from its event log: "accepted" when the
// rewritten SYN was answered with a SYN-ACK whose ISN comes from the TIME_WAIT socket,
// "assassinated" when it was answered with an ACK of the old connection, then the
// client's RST and a new SYN.
func reuseOutcome(recs []rules.Record) (string, error) {
	var first, second []rules.Record
	for _, r := range recs {
		if len(first) == 0 || r.Client == first[0].Client {
			first = append(first, r)
		} else {
			second = append(second, r)
		}
	}
	var oldNxt uint32
	for _, r := range first {
		if r.Side == rules.Server && r.Flags.Has(segment.FIN) && r.Verdict == rules.Accept {
			oldNxt = r.Seq + uint32(r.Len) + 1
		}
	}
	if oldNxt == 0 || len(second) < 3 {
		return "", fmt.Errorf("no first connection closed by the server, or no second connection")
	}
	for _, r := range second {
		if !r.Modified && r.Verdict == rules.Accept {
			return "", fmt.Errorf("a segment of the second connection left unchanged: %+v", r)
		}
	}
	syn, answer := second[0], second[1]
	if syn.Flags != segment.SYN || answer.Side != rules.Server {
		return "", fmt.Errorf("the second connection starts with %s, %s", syn.Flags, answer.Flags)
	}
	switch {
	case answer.Flags == segment.SYN|segment.ACK && answer.Seq == oldNxt+65537:
		return "accepted", nil
	case answer.Flags == segment.ACK && answer.Seq == oldNxt:
		if len(second) < 5 || second[2].Flags != segment.RST || second[3].Flags != segment.SYN || second[4].Flags != segment.SYN|segment.ACK {
			return "", fmt.Errorf("after the ACK of the old connection: no RST, SYN, SYN-ACK")
		}
		return "assassinated", nil
	}
	return "", fmt.Errorf("the rewritten SYN was answered with %s seq=%d (old snd_nxt %d)", answer.Flags, answer.Seq, oldNxt)
}

// split: a three-way close (the server's FIN|ACK acknowledging the client's FIN) turned
// into a four-way one: the ACK alone, the FIN injected 100 ms later; the client waits in
// FIN_WAIT2 meanwhile, the server does not retransmit.
func TestMutateSplit(t *testing.T) {
	topo := newLab(t)
	cfg := writeConfig(t, "split", `
name = "split"
[target]
port = 8080
[[rule]]
name = "split-fin"
side = "server"
has_flags = "FIN"
phase = "ack-of-client-fin"
action = "split"
delay = "100ms"
`)
	res := observedRun(t, topo, scenario.Spec{Config: cfg,
		Server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "echo-close"),
		Client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "send-close", "--bytes", "100")})
	var ack, fin *rules.Record
	for i, r := range res.Records {
		switch {
		case r.Rule == "split-fin" && r.Modified:
			ack = &res.Records[i]
		case r.Rule == "split-fin" && r.Injected:
			fin = &res.Records[i]
		}
	}
	if ack == nil || fin == nil || ack.Flags != segment.ACK || fin.Flags != segment.FIN|segment.ACK || fin.Seq != ack.Seq {
		t.Fatalf("split: ack %+v, fin %+v\n%s", ack, fin, formatRecords(res.Records))
	}
	if held := time.Duration(fin.HeldNS); held < 100*time.Millisecond || held > 150*time.Millisecond {
		t.Errorf("the FIN followed the ACK after %v, want 100ms", held)
	}
	conn := labConn(t, topo, 8080, res.Observed.Connections)
	fw2 := stateEntry(conn.Client, observe.FinWait2)
	if fw2 == nil || len(conn.Server.Retransmits) != 0 || stateEntry(conn.Client, observe.TimeWait) == nil {
		t.Errorf("%s", describeConn(conn))
	}
	if res.ClientErr != nil || res.ServerErr != nil {
		t.Errorf("applications: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
}

// duplicate: the server's reply sent twice, the copy right after it; the client's kernel
// takes the second to arrive for a duplicate (it answers with a D-SACK), the client reads
// the reply once.
func TestMutateDuplicate(t *testing.T) {
	topo := newLab(t)
	cfg := writeConfig(t, "duplicate", `
name = "duplicate"
[target]
port = 8080
[[rule]]
name = "duplicate-reply"
side = "server"
payload = "some"
action = "duplicate"
`)
	before := tcpCounters(t, topo, lab.RoleClient)
	res := observedRun(t, topo, scenario.Spec{Config: cfg,
		Server: builtin("server", "--listen", "{server_addr}:{port}", "--mode", "reply-wait-close"),
		Client: builtin("client", "--connect", "{server_addr}:{port}", "--mode", "request-shutdown")})
	delta := counterDelta(before, tcpCounters(t, topo, lab.RoleClient), twCounters...)
	t.Logf("client TcpExt counters: %v", delta)
	n := 0
	for _, r := range res.Records {
		if r.Injected && r.Side == rules.Server && r.Len > 0 {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d copies injected, want 1\n%s", n, formatRecords(res.Records))
	}
	if delta["TcpExtTCPDSACKOldSent"] < 1 {
		t.Errorf("the client's kernel sent no D-SACK for the copy: %v", delta)
	}
	if res.ClientErr != nil || res.ServerErr != nil || !recordHas(res.ClientOutput, 0, `"received":`+strconv.Itoa(len("reply: request 0\n"))) {
		t.Errorf("applications: client %v (%s), server %v (%s)", res.ClientErr, res.ClientOutput, res.ServerErr, res.ServerOutput)
	}
}

// Over IPv6: a RST injected through the router's raw IPv6 socket, and a merged data+FIN
// segment given back with its verdict (TCP checksum over the IPv6 pseudo-header).
func TestMutateIPv6(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "ip6tables")
	t.Parallel()
	for name, body := range map[string]string{
		"reset": `
[[rule]]
name = "reset-the-client"
side = "client"
flags = "pure-ack"
phase = "established"
nth = 1
action = "inject-rst"
toward = "client"
[lab]
family = "ipv6"
server = "{finproxy} app server --listen [{server_addr}]:{port} --mode reply-wait-close --timeout 1s"
client = "{finproxy} app client --connect [{server_addr}]:{port} --mode expect-reset"
[expect.client]
states = ["ESTABLISHED", "CLOSE"]
resets_received = true
exit = 0
[[expect.segment]]
side = "server"
flags = "RST|ACK"
injected = true
verdict = "accept"
min = 1
max = 1`,
		"fin-with-data": `
[[rule]]
name = "merge-reply-and-fin"
side = "server"
action = "merge-data-fin"
timeout = "500ms"
[lab]
family = "ipv6"
server = "{finproxy} app server --listen [{server_addr}]:{port} --mode reply-close"
client = "{finproxy} app client --connect [{server_addr}]:{port} --mode request-close"
[expect.server]
states = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
exit = 0
[expect.client]
states = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
exit = 0
[[expect.segment]]
side = "server"
has_flags = "FIN"
payload = "some"
modified = true
min = 1
max = 1`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := writeConfig(t, name+"-v6", "name = \""+name+"-v6\"\n[target]\nport = 8080\n"+body+"\n")
			code, out, rep := runLab(t, "-c", cfg, "--runs", "3", "--port", labPort())
			if code != 0 || rep.Passed != 3 {
				t.Fatalf("IPv6 %s: exit %d\n%s", name, code, out)
			}
			if a := rep.Runs[0].Connections[0].Client.Addr; !strings.HasPrefix(a, "[fd00:") {
				t.Errorf("client address %s: not the IPv6 one", a)
			}
		})
	}
}
