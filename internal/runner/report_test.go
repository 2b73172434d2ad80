package runner

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/story"
)

var (
	t0    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cAddr = netip.MustParseAddrPort("198.18.1.2:40112")
	sAddr = netip.MustParseAddrPort("198.18.2.2:8080")
	cISN  = uint32(4000000000)
	sISN  = uint32(7)
	ms    = func(f float64) time.Time { return t0.Add(time.Duration(f * float64(time.Millisecond))) }
)

// note is a segment's note as finproxy run puts it on the observer's timeline (its
// text written, as in a report).
func note(side rules.Side, flags segment.Flags, seq, ack uint32, rule string, v rules.Verdict, at time.Time) observe.Note {
	r := rules.Record{Time: at.UnixNano(), VerdictTime: at.UnixNano(), Client: cAddr, Server: sAddr, Side: side,
		Flags: flags, Seq: seq, Ack: ack, Rule: rule, Verdict: v}
	if rule != "" {
		r.Action = "drop"
	}
	src, dst := cAddr, sAddr
	if side == rules.Server {
		src, dst = sAddr, cAddr
	}
	return observe.Note{At: at, Src: src, Dst: dst, Text: story.RecordText(r), Record: &r}
}

// lostFinalACK is scenario 4 as the observer reports it: the client's final ACK
// dropped, the server's FIN retransmitted from LAST_ACK.
func lostFinalACK() observe.Connection {
	c := observe.Connection{Incarnation: 1, FirstSeen: t0}
	c.Client = observe.Side{Addr: cAddr, States: []observe.StateEntry{
		{State: observe.SynSent, At: ms(0), Source: observe.SourceTrace},
		{State: observe.TimeWait, At: ms(2.55), Source: observe.SourceDiag, Ongoing: true, Dwell: observe.Duration(time.Second)}},
		Timewait: &observe.Timewait{State: observe.TimeWait, Restarts: []time.Time{ms(214.9)}, Remaining: observe.Duration(59 * time.Second)}}
	c.Server = observe.Side{Addr: sAddr, States: []observe.StateEntry{{State: observe.LastAck, At: ms(2.35), Source: observe.SourceTrace}},
		Retransmits: []observe.RetransmitEntry{{State: observe.LastAck, At: ms(212.8)}}}
	c.Notes = []observe.Note{
		note(rules.Client, segment.SYN, cISN, 0, "", rules.Accept, ms(1.0)),
		note(rules.Server, segment.SYN|segment.ACK, sISN, cISN+1, "", rules.Accept, ms(1.4)),
		note(rules.Client, segment.ACK, cISN+1002, sISN+2, "drop-final-ack", rules.Drop, ms(2.6)),
		note(rules.Server, segment.FIN|segment.ACK, sISN+1, cISN+1002, "", rules.Accept, ms(214.7)),
	}
	return c
}

func TestReportRoundTrip(t *testing.T) {
	parsed, err := config.Parse([]byte(`name = "x"
[target]
port = 8080
hook = "forward"
[[rule]]
name = "drop-final-ack"
side = "client"
flags = "pure-ack"
phase = "ack-of-server-fin"
action = "drop"
`), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &parsed.Config
	res := &Result{Observed: true, Observation: &observe.Report{Connections: []observe.Connection{lostFinalACK()}},
		Counters: []rules.Counters{{Rule: "drop-final-ack", Matched: 1, Dropped: 1}}}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := WriteReport(path, NewReport(cfg, res)); err != nil {
		t.Fatal(err)
	}
	r, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.Name != "x" || r.Config.Hook != rules.HookForward || r.Config.Port != 8080 || len(r.Config.Rules) != 1 ||
		r.Observation == nil || len(r.Connections) != 1 || r.Counters[0].Dropped != 1 {
		t.Fatalf("report %+v", r)
	}
	var drops int
	for _, n := range r.Connections[0].Notes {
		rc := n.Record
		if rc == nil {
			t.Fatalf("note %+v: no record", n)
		}
		if rc.Verdict == rules.Drop && rc.Rule == "drop-final-ack" && rc.Flags == segment.ACK && rc.Seq == cISN+1002 {
			drops++
		}
	}
	if drops != 1 {
		t.Errorf("%d dropped final ACKs decoded, want 1", drops)
	}
	// Read back, the timeline prints as before.
	var a, b bytes.Buffer
	story.WriteTimelines(&a, res.Observation.Connections, story.TimelineOptions{})
	story.WriteTimelines(&b, r.Connections, story.TimelineOptions{})
	if a.String() != b.String() || a.Len() == 0 {
		t.Errorf("timeline from the report differs:\n%s\nwant\n%s", b.String(), a.String())
	}
	// Without observation: null.
	r2 := NewReport(cfg, &Result{})
	if r2.Observation != nil || r2.Connections == nil || r2.Counters == nil {
		t.Errorf("unobserved report %+v", r2)
	}
}

// The segments' notes come from the Observer without a text (annotate does not format on
// the queued segments' path); the report has one for each, and a note's own text stays.
func TestNoteTextsMadeForTheReport(t *testing.T) {
	c := lostFinalACK()
	for i := range c.Notes {
		c.Notes[i].Text = ""
	}
	c.Notes = append(c.Notes, observe.Note{At: ms(300), Src: cAddr, Dst: sAddr, Text: "a note of its own"})
	conns := []observe.Connection{c}
	noteTexts(conns)
	for _, n := range conns[0].Notes[:len(c.Notes)-1] {
		if want := story.RecordText(*n.Record); n.Text != want {
			t.Errorf("note text %q, want %q", n.Text, want)
		}
	}
	if n := conns[0].Notes[len(c.Notes)-1]; n.Text != "a note of its own" || n.Record != nil {
		t.Errorf("text-only note became %+v", n)
	}
}
