package rules

// The harness of the engine tests: recorded segment sequences (testdata/seq/*.txt, see the
// README there), a fake clock, a sink that insists on one verdict per packet id, and the
// records rendered as short lines for comparison.

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

var (
	t0         = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	testClient = netip.MustParseAddrPort("10.0.0.1:40000")
	testServer = netip.MustParseAddrPort("10.0.0.2:8080")
)

// seqLine is one segment of a recorded sequence.
type seqLine struct {
	line      int
	delta     time.Duration
	side      Side
	seg       segment.Segment
	phases    Phase
	hasPhases bool
	inc       int
}

// loadSeq parses testdata/seq/name.
func loadSeq(t testing.TB, name string) []seqLine {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "seq", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines, err := parseSeq(bufio.NewScanner(f))
	if err != nil {
		t.Fatalf("%s:%v", name, err)
	}
	return lines
}

func parseSeq(sc *bufio.Scanner) ([]seqLine, error) {
	client, server := testClient, testServer
	var out []seqLine
	for n := 1; sc.Scan(); n++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if strings.HasPrefix(fields[0], "@") {
			if len(fields) != 2 {
				return nil, fmt.Errorf("%d: want @client|@server ADDR:PORT", n)
			}
			ap, err := netip.ParseAddrPort(fields[1])
			if err != nil {
				return nil, fmt.Errorf("%d: %v", n, err)
			}
			switch fields[0] {
			case "@client":
				client = ap
			case "@server":
				server = ap
			default:
				return nil, fmt.Errorf("%d: unknown directive %s", n, fields[0])
			}
			continue
		}
		if len(fields) < 3 || !strings.HasPrefix(fields[0], "+") {
			return nil, fmt.Errorf("%d: want +DELTA SIDE FLAGS key=value...", n)
		}
		l := seqLine{line: n}
		var err error
		if l.delta, err = time.ParseDuration(fields[0][1:]); err != nil {
			return nil, fmt.Errorf("%d: %v", n, err)
		}
		switch fields[1] {
		case "client":
			l.side, l.seg.Src, l.seg.Dst = Client, client, server
		case "server":
			l.side, l.seg.Src, l.seg.Dst = Server, server, client
		default:
			return nil, fmt.Errorf("%d: side %q (want client or server)", n, fields[1])
		}
		if l.seg.Flags, err = segment.ParseFlags(fields[2]); err != nil {
			return nil, fmt.Errorf("%d: %v", n, err)
		}
		for _, kv := range fields[3:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%d: %q is not key=value", n, kv)
			}
			var u uint64
			switch k {
			case "seq", "ack", "len", "inc":
				if u, err = strconv.ParseUint(v, 10, 32); err != nil {
					return nil, fmt.Errorf("%d: %s: %v", n, k, err)
				}
			}
			switch k {
			case "seq":
				l.seg.Seq = uint32(u)
			case "ack":
				l.seg.Ack = uint32(u)
			case "len":
				l.seg.PayloadLen = int(u)
			case "inc":
				l.inc = int(u)
			case "phases":
				l.hasPhases = true
				if v == "any" {
					break
				}
				for _, name := range strings.Split(v, "+") {
					p, err := ParsePhase(name)
					if err != nil {
						return nil, fmt.Errorf("%d: %v", n, err)
					}
					l.phases |= p
				}
			default:
				return nil, fmt.Errorf("%d: unknown key %q", n, k)
			}
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// harness drives an Engine with a fake clock and records what it does.
type harness struct {
	t   testing.TB
	clk *FakeClock
	eng *Engine

	mu       sync.Mutex
	verdicts map[uint32]Verdict
	events   []string
	records  []Record
	lastID   uint32

	nextID   uint32
	curID    uint32
	observed map[uint32]observation
}

type observation struct {
	phases Phase
	inc    int
	conn   *Conn
}

func newHarness(t testing.TB, cfg *Config, opts Options) *harness {
	h := &harness{
		t:        t,
		clk:      NewFakeClock(t0),
		verdicts: map[uint32]Verdict{},
		observed: map[uint32]observation{},
	}
	opts.Sink = h
	opts.Log = h.record
	opts.Clock = h.clk
	h.eng = NewEngine(cfg, opts)
	h.eng.observe = func(c *Conn, _ Side, phases Phase) {
		h.observed[h.curID] = observation{phases, c.Incarnation(), c}
	}
	return h
}

// Verdict implements Sink.
func (h *harness) Verdict(id uint32, v Verdict) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, dup := h.verdicts[id]; dup {
		h.t.Errorf("packet %d: second verdict %s (first %s)", id, v, old)
	}
	h.verdicts[id] = v
	h.lastID = id
	return nil
}

func (h *harness) record(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	h.events = append(h.events, render(h.lastID, r))
}

// render shows a record as "ID SIDE FLAGS VERDICT [RULE/ACTION] [held=D] [modified]
// [injected]" (an injected segment has ID 0).
func render(id uint32, r Record) string {
	s := fmt.Sprintf("%d %s %s %s", id, r.Side, r.Flags, r.Verdict)
	if r.Rule != "" {
		s += " " + r.Rule + "/" + r.Action
	}
	if r.HeldNS > 0 {
		s += " held=" + time.Duration(r.HeldNS).String()
	}
	if r.Modified {
		s += " modified"
	}
	if r.Injected {
		s += " injected"
	}
	return s
}

// handle hands one segment to the engine as packet id (0: the next id) and returns the id.
func (h *harness) handle(seg segment.Segment) uint32 {
	h.nextID++
	h.curID = h.nextID
	h.eng.Handle(Packet{ID: h.curID, Time: h.clk.Now(), Seg: seg})
	return h.curID
}

// play runs a sequence, checking its phases= and inc= assertions.
func (h *harness) play(lines []seqLine) {
	h.t.Helper()
	for _, l := range lines {
		h.clk.Advance(l.delta)
		id := h.handle(l.seg)
		o, ok := h.observed[id]
		if !ok {
			h.t.Fatalf("line %d: the engine did not track segment %d", l.line, id)
		}
		if l.hasPhases && o.phases != l.phases {
			h.t.Errorf("line %d (%s): phases %s, want %s", l.line, &l.seg, o.phases, l.phases)
		}
		if l.inc != 0 && o.inc != l.inc {
			h.t.Errorf("line %d (%s): incarnation %d, want %d", l.line, &l.seg, o.inc, l.inc)
		}
		if side := o.conn.SideOf(l.seg.Src); side != l.side {
			h.t.Errorf("line %d: sender is %s, want %s", l.line, side, l.side)
		}
	}
}

func (h *harness) wantEvents(want ...string) {
	h.t.Helper()
	h.mu.Lock()
	got := append([]string(nil), h.events...)
	h.mu.Unlock()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		h.t.Errorf("events:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// allVerdicts checks that every packet handed in got exactly one verdict.
func (h *harness) allVerdicts() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := uint32(1); id <= h.nextID; id++ {
		if _, ok := h.verdicts[id]; !ok {
			h.t.Errorf("packet %d has no verdict", id)
		}
	}
	if len(h.records) != len(h.verdicts) {
		h.t.Errorf("%d records for %d verdicts", len(h.records), len(h.verdicts))
	}
}

func (h *harness) wantCounters(want ...Counters) {
	h.t.Helper()
	got := h.eng.Counters()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Errorf("counters:\n\t%+v\nwant\n\t%+v", got, want)
	}
}

func cfgOf(rules ...*Rule) *Config {
	return &Config{Name: "test", Seed: 1, Target: Target{Port: 8080}, Rules: rules}
}

func rule(name string, m Match, actionName string, a Action) *Rule {
	return &Rule{Name: name, Match: m, ActionName: actionName, Action: a}
}

func seg(src, dst netip.AddrPort, flags segment.Flags, seq, ack uint32, n int) segment.Segment {
	return segment.Segment{Src: src, Dst: dst, Flags: flags, Seq: seq, Ack: ack, PayloadLen: n}
}

func TestParseSeq(t *testing.T) {
	for _, bad := range []string{
		"client SYN seq=1",
		"+0ms nobody SYN",
		"+0ms client BOGUS",
		"+0ms client SYN seq=x",
		"+0ms client SYN phases=sideways",
		"+0ms client SYN color=red",
		"@client nowhere",
	} {
		if _, err := parseSeq(bufio.NewScanner(strings.NewReader(bad))); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "seq", "*.txt"))
	if len(files) == 0 {
		t.Fatal("no sequences")
	}
	for _, f := range files {
		if lines := loadSeq(t, filepath.Base(f)); len(lines) == 0 {
			t.Errorf("%s: no segments", f)
		}
	}
}
