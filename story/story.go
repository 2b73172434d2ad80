package story

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/segment"
)

// Kind is what an event of a story is.
type Kind uint8

// Kinds of events.
const (
	// KindSegment is a segment finproxy queued (or made: Record.Injected) and its fate.
	KindSegment Kind = iota + 1
	// KindState is a side entering a state.
	KindState
	// KindRetransmit is a retransmission the side's kernel reported.
	KindRetransmit
	// KindResetSent and KindResetReceived are a side's resets.
	KindResetSent
	KindResetReceived
	// KindTimewaitRestart is a restart of a side's TIME_WAIT timer (2*MSL again).
	KindTimewaitRestart
	// KindNote is a note of text only put on the connection's timeline.
	KindNote
)

var kindNames = [...]string{KindSegment: "segment", KindState: "state", KindRetransmit: "retransmit",
	KindResetSent: "reset_sent", KindResetReceived: "reset_received", KindTimewaitRestart: "timewait_restart", KindNote: "note"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// MarshalText writes the kind's name ("segment", "state", ...).
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Event is one thing that happened on the connection. Side is the side it happened to
// (a segment's sender); the fields of its Kind are set, the others are zero.
type Event struct {
	At   time.Time     `json:"at"`
	Side eventlog.Side `json:"side"`
	Kind Kind          `json:"kind"`
	// Segment is set for KindSegment.
	Segment *Segment `json:"segment,omitempty"`
	// State is set for KindState.
	State *StateChange `json:"state,omitempty"`
	// In is the state a retransmission or a reset sent happened in (Unknown when the
	// kernel did not say); SynAck marks a SYN-ACK retransmitted by a request socket;
	// Reason is why a reset was sent.
	In     observe.State `json:"in,omitzero"`
	SynAck bool          `json:"synack,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// Text is a note's.
	Text string `json:"text,omitempty"`
}

// Segment is a segment of the story: its record and its numbers relative to the story's
// bases (see SeqBase).
type Segment struct {
	Record eventlog.Record `json:"record"`
	Seq    uint32          `json:"rel_seq"`
	Ack    uint32          `json:"rel_ack"` // 0 without ACK

	// Retransmission is set when the segment sends sequence space its side sent before
	// (a SYN, a FIN or data with the same flags, number and length).
	Retransmission bool `json:"retransmission,omitempty"`
}

// Held reports whether the segment waited in finproxy at least min before its verdict (a
// segment finproxy made never waits).
func (s *Segment) Held(min time.Duration) bool {
	return !s.Record.Injected && time.Duration(s.Record.HeldNS) >= min
}

// Label is "FIN|ACK seq=1 ack=1002 len=0", seq and ack relative (ack only with ACK).
func (s *Segment) Label() string {
	return Label(s.Record.Flags, s.Seq, s.Ack, s.Record.Len)
}

// Label writes flags and numbers as a story shows them: "FIN|ACK seq=1 ack=1002 len=0";
// ack only when the ACK flag is set.
func Label(flags segment.Flags, seq, ack uint32, n int) string {
	s := fmt.Sprintf("%s seq=%d", flags, seq)
	if flags.Has(segment.ACK) {
		s += fmt.Sprintf(" ack=%d", ack)
	}
	return s + fmt.Sprintf(" len=%d", n)
}

// StateChange is a side entering a state: From is the state it left (Unknown for its
// first), the rest is the observer's entry of To.
type StateChange struct {
	From    observe.State    `json:"from,omitzero"`
	To      observe.State    `json:"to"`
	Dwell   observe.Duration `json:"dwell"`
	Ongoing bool             `json:"ongoing,omitempty"`
	Source  string           `json:"source"`
}

// Story is what happened on one connection, in time order.
type Story struct {
	// Client and Server are the connection's ends; Incarnation its number on the 4-tuple
	// (0 when not known).
	Client      netip.AddrPort `json:"client"`
	Server      netip.AddrPort `json:"server"`
	Incarnation int            `json:"incarnation,omitempty"`
	// Base is what the segments' numbers are relative to.
	Base SeqBase `json:"-"`
	// FromSYN says whether both sides' numbers are relative to their SYNs (see SeqBase);
	// true when there is no segment.
	FromSYN bool `json:"from_syn"`
	// Events are in time order. At the same instant a segment comes first (finproxy
	// queued it before its receiver could act on it), then the client's events, then
	// the server's, then the notes.
	Events []Event `json:"events"`
}

// Segments are the story's segment events, in order.
func (s Story) Segments() []*Segment {
	var out []*Segment
	for i := range s.Events {
		if s.Events[i].Kind == KindSegment {
			out = append(out, s.Events[i].Segment)
		}
	}
	return out
}

// Belongs reports whether the event log's record r is a segment of the connection c: its
// 4-tuple, and its incarnation when both finproxy and the observer numbered them (each
// from 1 on the 4-tuple: the second connection's segments are not the first's).
func Belongs(r eventlog.Record, c *observe.Connection) bool {
	if !sameAddr(r.Client, c.Client.Addr) || !sameAddr(r.Server, c.Server.Addr) {
		return false
	}
	return r.Incarnation == 0 || c.Incarnation == 0 || r.Incarnation == c.Incarnation
}

func sameAddr(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// New tells the story of conn (nil: of the records alone) with the event log's records
// recs: those of conn's 4-tuple and incarnation (see Belongs), every one when conn is
// nil.
//
// A segment is placed when it was queued, one finproxy made when it was sent (its
// verdict time).
func New(recs []eventlog.Record, conn *observe.Connection) Story {
	var segs []Event
	for _, r := range recs {
		if conn == nil || Belongs(r, conn) {
			segs = append(segs, segEvent(time.Unix(0, r.Time), r))
		}
	}
	return tell(segs, nil, conn)
}

// FromNotes tells the story of conn with the records its notes carry (finproxy run puts
// its segments on the observer's timeline), at the notes' times; its notes of text only
// are events of the side that sent them.
func FromNotes(conn *observe.Connection) Story {
	var segs, notes []Event
	for _, n := range conn.Notes {
		if n.Record != nil {
			segs = append(segs, segEvent(n.At, *n.Record))
			continue
		}
		side := eventlog.Client
		if n.Src == conn.Server.Addr {
			side = eventlog.Server
		}
		notes = append(notes, Event{At: n.At, Side: side, Kind: KindNote, Text: n.Text})
	}
	return tell(segs, notes, conn)
}

// segEvent is the event of the record r queued at at.
func segEvent(at time.Time, r eventlog.Record) Event {
	if r.Injected && r.VerdictTime != 0 {
		at = at.Add(time.Duration(r.VerdictTime - r.Time))
	}
	return Event{At: at, Side: r.Side, Kind: KindSegment, Segment: &Segment{Record: r}}
}

// tell puts the segments, the sides' events and the notes in order, and numbers the
// segments.
func tell(segs, notes []Event, conn *observe.Connection) Story {
	var st Story
	var sides []Event
	slices.SortStableFunc(segs, func(a, b Event) int { return a.At.Compare(b.At) })
	rs := make([]eventlog.Record, len(segs))
	for i, e := range segs {
		rs[i] = e.Segment.Record
	}
	st.Base = NewSeqBase(rs)
	st.FromSYN = st.Base.FromSYN() || len(rs) == 0
	type key struct {
		side  eventlog.Side
		flags segment.Flags
		seq   uint32
		n     int
	}
	sent := map[key]bool{}
	for _, e := range segs {
		s, r := e.Segment, &e.Segment.Record
		s.Seq, s.Ack = st.Base.Rel(r.Side, r.Seq, r.Ack)
		if !r.Flags.Has(segment.ACK) {
			s.Ack = 0 // no acknowledgment number
		}
		if !r.Injected && (r.Len > 0 || r.Flags.Has(segment.SYN) || r.Flags.Has(segment.FIN)) {
			k := key{r.Side, r.Flags, r.Seq, r.Len}
			s.Retransmission = sent[k]
			sent[k] = true
		}
	}
	if conn != nil {
		st.Client, st.Server, st.Incarnation = conn.Client.Addr, conn.Server.Addr, conn.Incarnation
		sides = append(sideEvents(eventlog.Client, &conn.Client), sideEvents(eventlog.Server, &conn.Server)...)
	} else if len(rs) > 0 {
		st.Client, st.Server, st.Incarnation = rs[0].Client, rs[0].Server, rs[0].Incarnation
	}
	st.Events = slices.Concat(segs, sides, notes)
	slices.SortStableFunc(st.Events, func(a, b Event) int { return a.At.Compare(b.At) })
	return st
}

// sideEvents are what the observer saw of one side.
func sideEvents(side eventlog.Side, s *observe.Side) []Event {
	var evs []Event
	for i, e := range s.States {
		sc := &StateChange{To: e.State, Dwell: e.Dwell, Ongoing: e.Ongoing, Source: e.Source}
		if i > 0 {
			sc.From = s.States[i-1].State
		}
		evs = append(evs, Event{At: e.At, Side: side, Kind: KindState, State: sc})
	}
	for _, r := range s.Retransmits {
		evs = append(evs, Event{At: r.At, Side: side, Kind: KindRetransmit, In: r.State, SynAck: r.SynAck})
	}
	for _, r := range s.ResetsSent {
		evs = append(evs, Event{At: r.At, Side: side, Kind: KindResetSent, In: r.State, Reason: r.Reason})
	}
	for _, r := range s.ResetsReceived {
		evs = append(evs, Event{At: r.At, Side: side, Kind: KindResetReceived})
	}
	if s.Timewait != nil {
		for _, at := range s.Timewait.Restarts {
			evs = append(evs, Event{At: at, Side: side, Kind: KindTimewaitRestart})
		}
	}
	return evs
}

// MarshalJSON writes the story as one object: the connection's ends, whether the
// numbers are relative to the SYNs, and the events in order (the JSON renderer).
func (s Story) MarshalJSON() ([]byte, error) {
	type plain Story
	p := plain(s)
	if p.Events == nil {
		p.Events = []Event{}
	}
	return json.Marshal(p)
}
