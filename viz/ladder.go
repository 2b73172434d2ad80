package viz

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/story"
)

// Expectation is one expectation of a scenario's [expect] section and whether the run met
// it.
type Expectation struct {
	// Text says what was expected: "client states: ESTABLISHED → FIN_WAIT1 → CLOSING".
	Text string `json:"text"`
	Pass bool   `json:"pass"`
	// Detail is what was seen instead, when it failed; why it was not checked when
	// Skipped.
	Detail string `json:"detail,omitempty"`
	// Skipped: the expectation does not apply to this run (Pass is then true).
	Skipped bool `json:"skipped,omitempty"`
}

// Ladder is what one diagram shows: one connection.
type Ladder struct {
	// Title heads the picture ("simultaneous-close — run 1"), Subtitle follows it (the
	// scenario's description).
	Title    string `json:"title"`
	Subtitle string `json:"subtitle,omitempty"`
	// Finproxy says where finproxy ran, under its name ("on the router (FORWARD)").
	Finproxy string `json:"finproxy,omitempty"`
	// Pass, when set, is the run's outcome, shown beside the title.
	Pass *bool `json:"pass,omitempty"`
	// Expectations are listed at the top with their outcome.
	Expectations []Expectation `json:"expectations,omitempty"`
	// Conn is the observed connection: both sides' states, retransmissions and resets.
	// Nil: only the segments are drawn.
	Conn *observe.Connection `json:"conn,omitempty"`
	// Records are the event log's records. With Conn, only those of its connection (its
	// client and server addresses) are drawn. Nil with Conn: the records its notes carry
	// (`finproxy run` annotates the timeline with them).
	Records []rules.Record `json:"records"`
	// Notes are printed under the picture (warnings, what was not observed).
	Notes []string `json:"notes,omitempty"`
}

// Layout constants, in pixels. Text is monospace: its width is known from its length.
const (
	margin    = 16.0
	rulerW    = 84.0  // the time ruler, left of the client's labels
	laneW     = 196.0 // the states beside each line
	halfW     = 320.0 // from a side's line to finproxy's
	slope     = 10.0  // how far an arrow falls between the two lines
	centerGap = 30.0  // between two arrows: a label above each
	lineH     = 14.0  // a second line under an arrow
	sideGap   = 17.0  // between two labels beside the same line
	breakH    = 54.0  // a cut gap, with room for the label above the next arrow
	fontSize  = 12.0
	charW     = 7.23 // DejaVu Sans Mono and its kin at 12 px
	smallSize = 10.5
	smallW    = 6.33

	// breakAfter is the shortest gap that is cut rather than drawn compressed.
	breakAfter = 50 * time.Millisecond
	// heldMin is the shortest wait in finproxy drawn as a wait.
	heldMin = 100 * time.Microsecond
	// MaxSegments bounds the arrows of one diagram.
	MaxSegments = 400
)

// The three lines and the picture's width.
const (
	xClient = margin + rulerW + laneW + 14
	xMid    = xClient + halfW
	xServer = xMid + halfW
	width   = xServer + 14 + laneW + margin
)

// Colours.
const (
	colInk      = "#263238"
	colGrey     = "#78909c"
	colLine     = "#90a4ae"
	colDrop     = "#c62828"
	colHeld     = "#1565c0"
	colInjected = "#2e7d32"
	colRewrite  = "#6a1b9a"
	colRetx     = "#e65100"
	colPass     = "#2e7d32"
	colFail     = "#c62828"
)

// stateColour is the colour of a state's bar and label.
func stateColour(s observe.State) string {
	switch s {
	case observe.SynSent, observe.SynRecv, observe.NewSynRecv, observe.Listen:
		return "#cfd8dc"
	case observe.Established:
		return "#a5d6a7"
	case observe.FinWait1:
		return "#ffcc80"
	case observe.FinWait2:
		return "#ffe082"
	case observe.Closing:
		return "#ffab91"
	case observe.CloseWait:
		return "#e1bee7"
	case observe.LastAck:
		return "#ce93d8"
	case observe.TimeWait:
		return "#90caf9"
	}
	return "#eceff1"
}

// segKind is how a segment is drawn.
type segKind int

const (
	segPassed    segKind = iota // sender to receiver
	segDropped                  // sender to finproxy, cross
	segInjected                 // finproxy to receiver
	segRewritten                // sender to finproxy, then changed to the receiver
)

type seg struct {
	r        rules.Record
	at       int64 // when it appears (Unix ns): queued, or sent when finproxy made it
	kind     segKind
	toServer bool
	held     bool // waited in finproxy: a bar from queue to verdict time
	retx     bool
	off      float64 // the wait bar's offset from finproxy's line, when waits overlap
	label    string  // flags seq ack len
	outLabel string  // a rewritten segment as it left, when known
	fate     string  // what finproxy did, "" when nothing
	// fateShort is fate without the time, for when fate does not fit ("" none).
	fateShort string
	y0, y1    float64
}

// twoLines reports whether the segment has a second line of text, under its arrow: the
// segment as it left, for a rewritten one.
func (s *seg) twoLines() bool { return s.kind == segRewritten && s.outLabel != "" }

type evKind int

const (
	evState evKind = iota
	evRetransmit
	evResetSent
	evResetRecv
	evTWRestart
	evDepart
	evRelease
)

const (
	laneClient = 0
	laneCenter = 1
	laneServer = 2
)

type event struct {
	t    int64
	kind evKind
	lane int
	seg  *seg
	// side events
	state observe.StateEntry
	text  string
	y     float64
}

type cut struct {
	y0, y1 float64
	gap    time.Duration
}

// layout is a ladder with every position computed.
type layout struct {
	l        Ladder
	segs     []*seg
	evs      []*event
	cuts     []cut
	t0       int64
	top, end float64 // the timelines' extent
	omitted  int
	fromSYN  bool // seq and ack are relative to both sides' SYNs
	client   observe.Side
	server   observe.Side
}

// story is what the ladder draws: the connection's story with the records given, or,
// with Records nil, with those its notes carry.
func (l *Ladder) story() story.Story {
	if l.Records == nil && l.Conn != nil {
		return story.FromNotes(l.Conn)
	}
	return story.New(l.Records, l.Conn)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// segLabel is "FIN|ACK seq=1 ack=1002 len=0", seq and ack relative to the story's bases.
func segLabel(side rules.Side, flags segment.Flags, seq, ack uint32, n int, b story.SeqBase) string {
	seq, ack = b.Rel(side, seq, ack)
	return story.Label(flags, seq, ack, n)
}

// fmtDur writes a duration in a few significant digits: "240 ms", "1.2 ms", "85 µs",
// "1.5 s", "60 s".
func fmtDur(d time.Duration) string {
	// Each unit up to where its rounding would reach the next one.
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < 999500*time.Nanosecond:
		return trimNum(float64(d)/1e3, 0) + " µs"
	case d < 9995*time.Microsecond:
		return trimNum(float64(d)/1e6, 2) + " ms"
	case d < 999950*time.Microsecond:
		return trimNum(float64(d)/1e6, 1) + " ms"
	case d < 9995*time.Millisecond:
		return trimNum(float64(d)/1e9, 2) + " s"
	case d < 99950*time.Millisecond:
		return trimNum(float64(d)/1e9, 1) + " s"
	}
	return trimNum(float64(d)/1e9, 0) + " s"
}

// trimNum formats v with at most prec decimals, without trailing zeros.
func trimNum(v float64, prec int) string {
	s := fmt.Sprintf("%.*f", prec, v)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fate says what finproxy did to a segment, "" when no rule acted; short is the same
// without the time it waited (which the wait bar shows), for when fate does not fit.
func fate(r rules.Record, held bool) (full, short string) {
	if r.Injected {
		return "injected by " + orQ(r.Rule), ""
	}
	if r.Rule == "" {
		if r.Verdict == rules.Drop {
			return "dropped", ""
		}
		return "", ""
	}
	h := fmtDur(time.Duration(r.HeldNS))
	switch {
	case r.Action == "merge" && r.Verdict == rules.Drop:
		return fmt.Sprintf("merged after %s by %s", h, r.Rule), "merged by " + r.Rule
	case r.Verdict == rules.Drop && held:
		return fmt.Sprintf("dropped after %s by %s", h, r.Rule), "dropped by " + r.Rule
	case r.Verdict == rules.Drop:
		return "dropped by " + r.Rule, ""
	case r.Modified:
		return "rewritten by " + r.Rule, ""
	case held && r.Action == "delay":
		return fmt.Sprintf("delayed %s by %s", h, r.Rule), "delayed by " + r.Rule
	case held:
		return fmt.Sprintf("held %s by %s", h, r.Rule), "held by " + r.Rule
	}
	return "passed by " + r.Rule, ""
}

func orQ(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

func newLayout(l Ladder) *layout {
	lay := &layout{l: l}
	if l.Conn != nil {
		lay.client, lay.server = l.Conn.Client, l.Conn.Server
	}
	st := l.story()
	n := len(st.Segments())
	if n > MaxSegments {
		lay.omitted = n - MaxSegments
	}
	if l.Conn == nil && n > 0 {
		lay.client.Addr, lay.server.Addr = st.Client, st.Server
	}
	lay.fromSYN = st.FromSYN
	dec := segment.NewDecoder()
	var evs []story.Event // the events drawn, in the story's order
	for _, e := range st.Events {
		if e.Kind != story.KindSegment {
			evs = append(evs, e)
			continue
		}
		if len(lay.segs) == MaxSegments {
			continue
		}
		r := e.Segment.Record
		s := &seg{r: r, at: e.At.UnixNano(), toServer: r.Side != rules.Server, held: e.Segment.Held(heldMin), retx: e.Segment.Retransmission}
		switch {
		case r.Injected:
			s.kind = segInjected
		case r.Verdict == rules.Drop:
			s.kind = segDropped
		case r.Modified:
			s.kind = segRewritten
		}
		s.label = e.Segment.Label()
		// The engine's record describes a rewritten segment as it left; should the bytes
		// that left (in-process records have them) say otherwise, both are shown.
		if s.kind == segRewritten && len(r.Out) > 0 {
			var o segment.Segment
			if dec.Decode(r.Out, &o) == nil {
				if l := segLabel(r.Side, o.Flags, o.Seq, o.Ack, o.PayloadLen, st.Base); l != s.label {
					s.outLabel = l
				}
			}
		}
		s.fate, s.fateShort = fate(r, s.held)
		lay.segs = append(lay.segs, s)
		evs = append(evs, e)
	}
	lay.events(evs)
	lay.place()
	return lay
}

// events lists everything drawn, in time order: the story's events, a held segment's
// release at its verdict time.
func (lay *layout) events(evs []story.Event) {
	add := func(e *event) { lay.evs = append(lay.evs, e) }
	segs := lay.segs
	for _, e := range evs {
		lane := laneClient
		if e.Side == rules.Server {
			lane = laneServer
		}
		t := e.At.UnixNano()
		switch e.Kind {
		case story.KindSegment:
			s := segs[0]
			segs = segs[1:]
			add(&event{t: s.at, kind: evDepart, lane: laneCenter, seg: s})
			if s.held {
				add(&event{t: s.r.VerdictTime, kind: evRelease, lane: laneCenter, seg: s})
			}
		case story.KindState:
			st := observe.StateEntry{State: e.State.To, At: e.At, Dwell: e.State.Dwell, Ongoing: e.State.Ongoing, Source: e.State.Source}
			add(&event{t: t, kind: evState, lane: lane, state: st})
		case story.KindRetransmit:
			text := "↻ retransmit in " + e.In.String()
			if e.SynAck {
				text = "↻ SYN-ACK retransmit"
			}
			add(&event{t: t, kind: evRetransmit, lane: lane, text: text})
		case story.KindResetSent:
			text := "RST sent"
			if e.Reason != "" {
				text += " (" + e.Reason + ")"
			} else if e.In != observe.Unknown {
				text += " in " + e.In.String()
			}
			add(&event{t: t, kind: evResetSent, lane: lane, text: text})
		case story.KindResetReceived:
			add(&event{t: t, kind: evResetRecv, lane: lane, text: "RST received"})
		case story.KindTimewaitRestart:
			add(&event{t: t, kind: evTWRestart, lane: lane, text: "TIME_WAIT timer restarted"})
		}
	}
	slices.SortStableFunc(lay.evs, func(a, b *event) int { return cmpInt(a.t, b.t) })
	if len(lay.evs) > 0 {
		lay.t0 = lay.evs[0].t
	}
}

// step is the room a gap between two events gets: about 20 px for 1 ms, 30 px for 10 ms.
func step(gap time.Duration) float64 {
	if gap <= 0 {
		return 0
	}
	return 2 + 9*math.Log10(1+float64(gap)/float64(10*time.Microsecond))
}

// place gives every event its height: in time order, each gap compressed (step) or cut,
// and never closer than its labels need to the previous event of the same lane.
func (lay *layout) place() {
	y := lay.top
	var last [3]float64
	for i := range last {
		last[i] = math.Inf(-1)
	}
	for i, e := range lay.evs {
		if i > 0 {
			gap := time.Duration(e.t - lay.evs[i-1].t)
			if gap > breakAfter {
				lay.cuts = append(lay.cuts, cut{y0: y + 8, y1: y + breakH - 18, gap: gap})
				y += breakH
			} else {
				y += step(gap)
			}
		}
		gapOf := sideGap
		if e.lane == laneCenter {
			gapOf = centerGap
		}
		y = max(y, last[e.lane]+gapOf)
		e.y = y
		last[e.lane] = y
		if e.lane == laneCenter && e.seg.twoLines() && (e.kind == evRelease || !e.seg.held) {
			last[e.lane] += lineH // its second line, under the arrow
		}
		if e.lane == laneCenter {
			// What the receiver does next comes after the arrow reached it, and nothing
			// beside the sender's line goes above the arrow's label.
			last[laneClient] = max(last[laneClient], y+slope+3-sideGap)
			last[laneServer] = max(last[laneServer], y+slope+3-sideGap)
			s := e.seg
			if e.kind == evDepart {
				s.y0 = y
				if !s.held {
					s.y1 = y
				}
			} else {
				s.y1 = y
			}
		}
	}
	lay.end = y + 26
	// Waits at the same time stand side by side on finproxy's line: 0, +11, -11, +22, ...
	var ends []float64
	for _, s := range lay.segs {
		if !s.held {
			continue
		}
		k := 0
		for k < len(ends) && ends[k] > s.y0+slope/2-3 {
			k++
		}
		if k == len(ends) {
			ends = append(ends, 0)
		}
		ends[k] = s.y1 + 3
		s.off = float64((k+1)/2) * 11
		if k%2 == 0 {
			s.off = -s.off
		}
	}
}
