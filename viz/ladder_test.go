package viz

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/finproxy/finproxy/internal/golden"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// recorded are the runs in testdata/NAME.json: the Ladder of a real `finproxy lab -c NAME`
// run (its records as the event log has them, the observer's connection, the
// expectations with their outcome).
var recorded = []string{"lost-final-ack", "simultaneous-close", "three-way-close", "lost-syn-ack", "no-time-wait",
	"fin-wait-2-hang", "half-close", "close-wait-leak", "simultaneous-close-timeout"}

func loadLadder(t *testing.T, name string) Ladder {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var l Ladder
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return l
}

func render(t *testing.T, l Ladder) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteSVG(&b, l); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkGolden compares got with testdata/name.golden.svg (go test ./viz -update rewrites
// it, after the picture was checked).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", name+".golden.svg"), []byte(got))
}

func TestGoldenRecorded(t *testing.T) {
	for _, name := range recorded {
		t.Run(name, func(t *testing.T) {
			l := loadLadder(t, name)
			got := render(t, l)
			if again := render(t, l); again != got {
				t.Fatal("two renderings of the same input differ")
			}
			checkSVG(t, got, l)
			checkGolden(t, name, got)
		})
	}
}

// What the recorded runs must show, beyond the golden bytes.
func TestRecordedContent(t *testing.T) {
	for _, c := range []struct {
		name     string
		contains []string
		count    map[string]int
	}{
		{"lost-final-ack", []string{"dropped by drop-final-ack", "↻ retransmit in LAST_ACK", "TIME_WAIT timer restarted", "later ⋯"},
			map[string]int{`class="seg dropped"`: 1, `class="seg retransmission"`: 1, `class="cut"`: 1}},
		{"simultaneous-close", []string{"held ", "by hold-"},
			map[string]int{">CLOSING<": 2, `class="state"`: 10, "class=\"expect pass\"": 8, "class=\"expect fail\"": 0}},
		{"three-way-close", []string{"merged after ", "merge-ack-into-fin"}, map[string]int{`class="seg dropped held"`: 1}},
		{"lost-syn-ack", []string{"dropped by drop-first-syn-ack", "↻ SYN-ACK retransmit", "↻ retransmit in SYN_SENT", " later ⋯"}, nil},
		{"no-time-wait", []string{"RST sent (NO_SOCKET)", "RST received", "RST seq=12 len=0"}, nil},
		{"fin-wait-2-hang", []string{"dropped by drop-server-fins"}, map[string]int{`class="seg dropped`: 4, `class="seg dropped retransmission"`: 3}},
		// An 11-segment close with data from CLOSE_WAIT and a FIN delayed through a cut.
		{"half-close", []string{"delayed 15", "by delay-server-fin", "passed by server-data-after-client-fin"},
			map[string]int{`<g class="seg`: 11, `class="seg held"`: 2, `class="cut"`: 1}},
		{"close-wait-leak", []string{"RST sent (NO_SOCKET)", "RST received", "CLOSE_WAIT"}, nil},
		// simultaneous-close with a server that waits for EOF: the client's FIN and its five
		// retransmissions wait side by side until the hold's 5 s timeout (then the server's FIN, briefly).
		{"simultaneous-close-timeout", []string{"held 5.01 s by hold-client-fin", "held 499 µs by hold-server-fin", "↻ retransmit in FIN_WAIT1"},
			map[string]int{`class="wait"`: 7, `class="expect fail"`: 5, `class="seg held retransmission"`: 5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			svg := render(t, loadLadder(t, c.name))
			for _, s := range c.contains {
				if !strings.Contains(svg, esc(s)) {
					t.Errorf("no %q", s)
				}
			}
			for s, n := range c.count {
				if got := strings.Count(svg, s); got != n {
					t.Errorf("%d × %q, want %d", got, s, n)
				}
			}
		})
	}
}

var (
	cAddr = netip.MustParseAddrPort("198.18.1.2:40112")
	sAddr = netip.MustParseAddrPort("198.18.2.2:8080")
	t0    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// synthetic is a connection with every kind of mark: a rule that holds, one that delays,
// one that merges, one that drops, a rewritten segment (with the bytes as it left), an
// injected RST, a retransmission, resets, a TIME_WAIT restart, a sock_diag state, an
// ongoing state, a 60 s gap and a failed expectation with a long detail.
func synthetic(t *testing.T) Ladder {
	rec := func(side rules.Side, flags string, seq, ack uint32, n int, q, v float64, f func(*rules.Record)) rules.Record {
		fl, err := segment.ParseFlags(flags)
		if err != nil {
			t.Fatal(err)
		}
		r := rules.Record{Time: at(q).UnixNano(), VerdictTime: at(v).UnixNano(), HeldNS: int64((v - q) * 1e6),
			Client: cAddr, Server: sAddr, Side: side, Flags: fl, Seq: seq, Ack: ack, Len: n}
		if f != nil {
			f(&r)
		}
		return r
	}
	rule := func(name, action string, v rules.Verdict) func(*rules.Record) {
		return func(r *rules.Record) { r.Rule, r.Action, r.Verdict = name, action, v }
	}
	const c, s = 4000000000, 7
	out := tcpBytes(t, c+101, s+1)
	recs := []rules.Record{
		rec(rules.Client, "SYN", c, 0, 0, 0.2, 0.21, nil),
		rec(rules.Server, "SYN|ACK", s, c+1, 0, 0.5, 0.51, nil),
		rec(rules.Client, "ACK", c+1, s+1, 100, 1.0, 1.0, rule("slow-data", "delay", rules.Accept)),
		rec(rules.Client, "ACK", c+1, s+1, 0, 1.0, 13.0, rule("slow-data", "delay", rules.Accept)),
		rec(rules.Client, "PSH|ACK", c+1, s+1, 100, 14.0, 14.02, func(r *rules.Record) {
			rule("shrink-window", "rewrite", rules.Accept)(r)
			r.Modified, r.Out = true, out
		}),
		rec(rules.Client, "FIN|ACK", c+101, s+1, 0, 20.0, 260.0, rule("hold-client-fin", "hold", rules.Accept)),
		rec(rules.Server, "ACK", s+1, c+101, 0, 21.0, 25.0, rule("merge-ack", "merge", rules.Drop)),
		rec(rules.Server, "FIN|ACK", s+1, c+102, 0, 259.9, 259.95, nil),
		rec(rules.Client, "ACK", c+102, s+2, 0, 260.2, 260.21, rule("drop-final-ack", "drop", rules.Drop)),
		rec(rules.Server, "FIN|ACK", s+1, c+102, 0, 470.0, 470.01, nil),
		rec(rules.Server, "RST|ACK", s+2, c+102, 0, 471.0, 471.0, func(r *rules.Record) {
			rule("rst-after-fin", "inject", rules.Accept)(r)
			r.Injected, r.Out = true, tcpBytes(t, s+2, c+102)
		}),
	}
	st := func(state observe.State, ms, dwell float64, src string) observe.StateEntry {
		return observe.StateEntry{State: state, At: at(ms), Dwell: observe.Duration(dwell * float64(time.Millisecond)), Source: src}
	}
	conn := &observe.Connection{
		Incarnation: 2,
		Client: observe.Side{Addr: cAddr, States: []observe.StateEntry{
			st(observe.SynSent, 0, 0.6, "trace"), st(observe.Established, 0.6, 19, "trace"),
			st(observe.FinWait1, 19.6, 240.2, "trace"), st(observe.FinWait2, 259.8, 0.3, "trace"),
			st(observe.TimeWait, 260.1, 60000, "sock_diag"), st(observe.Close, 60260.1, 0, "sock_diag"),
		}, Retransmits: []observe.RetransmitEntry{{State: observe.FinWait1, At: at(230)}},
			Timewait:       &observe.Timewait{State: observe.TimeWait, Restarts: []time.Time{at(470.3)}},
			ResetsReceived: []observe.ResetEntry{{At: at(471.2)}}},
		Server: observe.Side{Addr: sAddr, States: []observe.StateEntry{
			st(observe.SynRecv, 1.2, 0.01, "trace"), st(observe.Established, 1.21, 19, "trace"),
			st(observe.CloseWait, 20.5, 239, "trace"), st(observe.LastAck, 259.8, 1000, "trace"),
		}, Retransmits: []observe.RetransmitEntry{{State: observe.LastAck, At: at(469.9)}},
			ResetsSent: []observe.ResetEntry{{At: at(471.5), State: observe.LastAck, Reason: "NOT_SPECIFIED"}}},
	}
	conn.Server.States[3].Ongoing = true
	pass := false
	return Ladder{
		Title:    "synthetic — every mark <&>",
		Subtitle: "a connection made up to show every kind of arrow and mark the ladder draws, with a subtitle long enough to wrap onto a second line of the header, which it must do cleanly at a space",
		Finproxy: "local hook",
		Pass:     &pass,
		Expectations: []Expectation{
			{Text: "client states: ESTABLISHED → FIN_WAIT1 → CLOSING → TIME_WAIT", Pass: false,
				Detail: "client states: want ESTABLISHED → FIN_WAIT1 → CLOSING → TIME_WAIT in order; saw SYN_SENT → ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 → TIME_WAIT → CLOSE (no CLOSING after FIN_WAIT1), which is what a lost race looks like"},
			{Text: "server retransmits in LAST_ACK", Pass: true},
		},
		Conn:    conn,
		Records: recs,
		Notes:   []string{"observation: a warning to show"},
	}
}

// tcpBytes is an IPv4 TCP ACK from the client with the given numbers.
func tcpBytes(t *testing.T, seq, ack uint32) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: cAddr.Addr().AsSlice(), DstIP: sAddr.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(cAddr.Port()), DstPort: layers.TCPPort(sAddr.Port()), Seq: seq, Ack: ack, ACK: true, Window: 10}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGoldenSynthetic(t *testing.T) {
	l := synthetic(t)
	got := render(t, l)
	checkSVG(t, got, l)
	for _, s := range []string{
		"synthetic — every mark &lt;&amp;&gt;", // escaped
		`class="seg injected"`, `class="seg rewritten"`, `class="seg held"`, `class="seg dropped held"`,
		"delayed 12 ms by slow-data", "rewritten by shrink-window", "→ ACK seq=101 ack=1 len=0", "merged after 4 ms by merge-ack",
		"injected by rst-after-fin", "RST sent (NOT_SPECIFIED)", "RST received", "↻ retransmit in FIN_WAIT1",
		"59.8 s later", "incarnation 2", "LAST_ACK", "≥1 s", `font-style="italic">TIME_WAIT`, "observation: a warning to show",
		"local hook",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("no %q", s)
		}
	}
	checkGolden(t, "synthetic", got)
}

// Only the connection's own records are drawn; without a connection, every record.
func TestRecordsFilteredByConnection(t *testing.T) {
	l := loadLadder(t, "lost-final-ack")
	other := l.Records[0]
	other.Client = netip.MustParseAddrPort("198.18.1.2:1")
	l.Records = append(l.Records, other)
	if n := strings.Count(render(t, l), `<g class="seg`); n != len(l.Records)-1 {
		t.Errorf("%d arrows, want %d (the other connection's record left out)", n, len(l.Records)-1)
	}
	l.Conn = nil
	svg := render(t, l)
	if n := strings.Count(svg, `<g class="seg`); n != len(l.Records) {
		t.Errorf("without a connection: %d arrows, want %d", n, len(l.Records))
	}
	if strings.Contains(svg, `class="state"`) {
		t.Error("states drawn without a connection")
	}
	// In `finproxy run`, the records come with the connection's notes.
	l = loadLadder(t, "lost-final-ack")
	for _, r := range l.Records {
		l.Conn.Notes = append(l.Conn.Notes, observe.Note{At: time.Unix(0, r.Time), Record: &r})
	}
	want := len(l.Records)
	l.Records = nil
	if n := strings.Count(render(t, l), `<g class="seg`); n != want {
		t.Errorf("records from the notes: %d arrows, want %d", n, want)
	}
}

func TestEmpty(t *testing.T) {
	svg := render(t, Ladder{})
	checkSVG(t, svg, Ladder{})
	if !strings.Contains(svg, "nothing was observed") {
		t.Error("an empty ladder does not say so")
	}
}

// checkSVG checks that svg is well-formed XML, refers to nothing outside itself, has one
// arrow per record, and that no two labels of the diagram overlap.
func checkSVG(t *testing.T, svg string, l Ladder) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "href" || strings.Contains(a.Value, "http") && a.Name.Local != "xmlns" {
					t.Errorf("external reference: <%s %s=%q>", se.Name.Local, a.Name.Local, a.Value)
				}
			}
			if se.Name.Local == "script" || se.Name.Local == "image" || se.Name.Local == "foreignObject" {
				t.Errorf("<%s> in the SVG", se.Name.Local)
			}
		}
	}
	if n, want := strings.Count(svg, `<g class="seg`), len(l.story().Segments()); n != want {
		t.Errorf("%d arrows, want %d (one per record)", n, want)
	}
	boxes := textBoxes(t, svg)
	for i := range boxes {
		for j := i + 1; j < len(boxes); j++ {
			if a, b := boxes[i], boxes[j]; a.overlaps(b) {
				t.Errorf("labels overlap: %q at (%.0f,%.0f) and %q at (%.0f,%.0f)", a.text, a.x0, a.y1, b.text, b.x0, b.y1)
			}
		}
	}
}

type box struct {
	x0, y0, x1, y1 float64
	text           string
}

func (a box) overlaps(b box) bool {
	return a.x0 < b.x1-0.5 && b.x0 < a.x1-0.5 && a.y0 < b.y1-0.5 && b.y0 < a.y1-0.5
}

var (
	textRE = regexp.MustCompile(`<text x="([-0-9.]+)" y="([-0-9.]+)"([^>]*)>(.*?)</text>`)
	attrRE = regexp.MustCompile(`(text-anchor|font-size)="([^"]*)"`)
	tagRE  = regexp.MustCompile(`<[^>]*>`)
)

// textBoxes estimates the box of every text: a character is 0.6 em wide (monospace; a
// little more than proportional text needs), a line 1 em high above its baseline.
func textBoxes(t *testing.T, svg string) []box {
	var out []box
	for _, m := range textRE.FindAllStringSubmatch(svg, -1) {
		x, _ := strconv.ParseFloat(m[1], 64)
		y, _ := strconv.ParseFloat(m[2], 64)
		size, anchor := 12.0, "start"
		for _, a := range attrRE.FindAllStringSubmatch(m[3], -1) {
			if a[1] == "font-size" {
				size, _ = strconv.ParseFloat(a[2], 64)
			} else {
				anchor = a[2]
			}
		}
		text := htmlUnescape(tagRE.ReplaceAllString(m[4], ""))
		w := float64(utf8.RuneCountInString(text)) * 0.6 * size
		x0 := x
		switch anchor {
		case "end":
			x0 = x - w
		case "middle":
			x0 = x - w/2
		}
		out = append(out, box{x0, y - 0.8*size, x0 + w, y + 0.2*size, text})
	}
	return out
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&#34;", `"`, "&#39;", "'").Replace(s)
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		500:                        "500 ns",
		85 * time.Microsecond:      "85 µs",
		1234 * time.Microsecond:    "1.23 ms",
		240 * time.Millisecond:     "240 ms",
		206789 * time.Microsecond:  "206.8 ms",
		1500 * time.Millisecond:    "1.5 s",
		60 * time.Second:           "60 s",
		60260 * time.Millisecond:   "60.3 s",
		3 * time.Hour / 2:          "5400 s",
		10 * time.Millisecond:      "10 ms",
		999999 * time.Nanosecond:   "1 ms",
		1999999 * time.Nanosecond:  "2 ms",
		50 * time.Millisecond:      "50 ms",
		100 * time.Microsecond:     "100 µs",
		2*time.Second + 1000000000: "3 s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestWrap(t *testing.T) {
	got := wrap("aaa bbb ccc dddddddddd e", 7)
	want := []string{"aaa bbb", "ccc", "ddddddd", "ddd e"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("wrap = %q, want %q", got, want)
	}
	if got := wrap("→ é → ü", 3); fmt.Sprint(got) != fmt.Sprint([]string{"→ é", "→ ü"}) {
		t.Errorf("wrap of multi-byte text = %q", got)
	}
}

// viz renders values: it must not reach the queue, netlink, iptables or the namespaces.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`+"\n---\n"+`{{join .Deps "\n"}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports, deps, _ := strings.Cut(string(out), "---")
	for _, bad := range []string{"nfq", "netlink", "iptables", "internal/runner", "internal/scenario", "finproxy/lab", "go-nfqueue"} {
		if strings.Contains(imports, bad) {
			t.Errorf("viz imports %s", bad)
		}
	}
	for _, bad := range []string{"finproxy/nfq", "go-nfqueue", "go-iptables", "internal/runner", "internal/scenario", "finproxy/lab"} {
		if strings.Contains(deps, bad) {
			t.Errorf("viz depends on %s", bad)
		}
	}
}
