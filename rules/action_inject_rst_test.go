package rules

import (
	"testing"

	"github.com/finproxy/finproxy/segment"
)

func TestInjectRSTValidate(t *testing.T) {
	paramErr(t, (&InjectRSTAction{}).Validate(), "toward")
	paramErr(t, (&InjectRSTAction{Toward: "nobody"}).Validate(), "toward")
	paramErr(t, (&InjectRSTAction{Toward: "both", Segment: 7}).Validate(), "segment")
	if err := (&InjectRSTAction{Toward: "server", Segment: Drop}).Validate(); err != nil {
		t.Error(err)
	}
}

func rstCfg(toward string) *Config {
	return cfgOf(rule("reset-client", Match{Side: Client, PureACK: true, Phases: PhaseEstablished, Nth: 1},
		"inject-rst", &InjectRSTAction{Toward: toward}))
}

// testdata/seq/reset-injection.txt: the client's ACK of the reply brings a RST toward the
// client whose seq is that ACK's ack number (what the client expects next), from the
// server; with "both", one toward the server too, whose seq is the ACK's seq.
func TestInjectRSTSequence(t *testing.T) {
	for _, tc := range []struct {
		toward string
		want   []string
	}{
		{"client", []string{"server > client RST|ACK seq=5018 ack=1011"}},
		{"both", []string{"server > client RST|ACK seq=5018 ack=1011", "client > server RST|ACK seq=1011 ack=5018"}},
		{"server", []string{"client > server RST|ACK seq=1011 ack=5018"}},
	} {
		m := newMHarness(t, rstCfg(tc.toward), Options{})
		m.play(loadSeq(t, "reset-injection.txt"))
		inj := m.injectedSegs()
		if len(inj) != len(tc.want) {
			t.Fatalf("%s: %d injected, want %d", tc.toward, len(inj), len(tc.want))
		}
		for i, s := range inj {
			wantSrc, wantDst := testServer, testClient
			if tc.want[i][0] == 'c' {
				wantSrc, wantDst = testClient, testServer
			}
			want := segment.Segment{Src: wantSrc, Dst: wantDst, Flags: segment.RST | segment.ACK}
			if tc.toward == "server" || i == 1 {
				want.Seq, want.Ack = 1011, 5018
			} else {
				want.Seq, want.Ack = 5018, 1011
			}
			if got := s.Info(); got != want {
				t.Errorf("%s: injected %v, want %v", tc.toward, &got, &want)
			}
		}
	}
	m := newMHarness(t, rstCfg("client"), Options{})
	m.play(loadSeq(t, "reset-injection.txt"))
	m.wantEvents(
		"1 client SYN accept",
		"2 server SYN|ACK accept",
		"3 client ACK accept",
		"4 client PSH|ACK accept",
		"5 server PSH|ACK accept",
		"6 client ACK accept reset-client/inject-rst",
		"0 server RST|ACK accept reset-client/inject-rst injected",
		"7 server FIN|ACK accept",
		"8 client RST accept",
	)
	m.wantCounters(Counters{Rule: "reset-client", Matched: 1, Passed: 1, Injected: 1})
}

// Toward the receiver of the matched segment: its seq plus length when the segment
// passes, its seq when it is dropped; toward a client in SYN_SENT (its SYN matched): an
// ack of the SYN.
func TestInjectRSTTowardReceiver(t *testing.T) {
	for _, tc := range []struct {
		verdict Verdict
		seq     uint32
		event   string
	}{
		{Accept, 5027, "1 server PSH|ACK accept r/inject-rst"},
		{Drop, 5001, "1 server PSH|ACK drop r/inject-rst"},
	} {
		m := newMHarness(t, cfgOf(rule("r", Match{Side: Server, Payload: 1}, "inject-rst", &InjectRSTAction{Toward: "client", Segment: tc.verdict})), Options{})
		m.handle(seg(testServer, testClient, fPSH|fACK, 5001, 1011, 26))
		m.wantEvents(tc.event, "0 server RST|ACK accept r/inject-rst injected")
		if inj := m.injectedSegs(); len(inj) != 1 || inj[0].Seq() != tc.seq || inj[0].Ack() != 1011 || inj[0].Dst() != testClient {
			t.Errorf("%s: injected %v", tc.verdict, inj)
		}
	}
	m := newMHarness(t, cfgOf(rule("r", Match{Side: Client, HasFlags: fSYN}, "inject-rst", &InjectRSTAction{Toward: "client"})), Options{})
	m.handle(seg(testClient, testServer, fSYN, 1000, 0, 0))
	if inj := m.injectedSegs(); len(inj) != 1 || inj[0].Ack() != 1001 || inj[0].Flags() != segment.RST|segment.ACK {
		t.Errorf("injected %v", inj)
	}
}
