package runner

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"github.com/finproxy/finproxy/story"
)

// TimelineOptions configure WriteTimelines.
type TimelineOptions struct {
	// MaxConnections bounds the connections printed (8 if zero); MaxEvents the lines of
	// each (80 if zero).
	MaxConnections, MaxEvents int
	// All prints every connection, not only the notable ones (see Notable).
	All bool
}

// Notable reports whether a connection is worth printing on its own: a rule acted on one
// of its segments, a side retransmitted, sent or received a reset, went through CLOSING,
// restarted its TIME_WAIT timer, or is still in CLOSE_WAIT, LAST_ACK or FIN_WAIT1.
func Notable(c observe.Connection) bool {
	for _, n := range c.Notes {
		if n.Record != nil && n.Record.Rule != "" {
			return true
		}
	}
	for _, s := range []observe.Side{c.Client, c.Server} {
		if len(s.Retransmits) > 0 || len(s.ResetsSent) > 0 || len(s.ResetsReceived) > 0 {
			return true
		}
		if s.Timewait != nil && len(s.Timewait.Restarts) > 0 {
			return true
		}
		for _, e := range s.States {
			if e.State == observe.Closing {
				return true
			}
		}
		if n := len(s.States); n > 0 && s.States[n-1].Ongoing {
			switch s.States[n-1].State {
			case observe.CloseWait, observe.LastAck, observe.FinWait1:
				return true
			}
		}
	}
	return false
}

// WriteTimelines prints, for each notable connection (every one with All), one line per
// event in time order, relative to the connection's first event: the states each side
// entered (with their dwell), the segments finproxy saw with their verdicts, the
// retransmissions with the state they happened in, resets and TIME_WAIT timer restarts:
//
//	198.18.1.2:40112 -> 198.18.2.2:8080  client pid 812 (finproxy), server pid 790 (finproxy)
//	  +    0.000 ms  client  SYN_SENT  for 0.105 ms
//	  ...
//	  +    2.713 ms  client  ACK seq=1001 ack=2 len=0  DROPPED by drop-final-ack
//	  +  205.644 ms  server  retransmit in LAST_ACK
//	  +  205.671 ms  server  FIN|ACK seq=1 ack=1001 len=0  accepted
//
// Sequence numbers are relative to the sides' initial ones when the handshake was seen.
// It returns the number of connections printed.
func WriteTimelines(w io.Writer, conns []observe.Connection, o TimelineOptions) int {
	if o.MaxConnections <= 0 {
		o.MaxConnections = 8
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = 80
	}
	var show []observe.Connection
	for _, c := range conns {
		if o.All || Notable(c) {
			show = append(show, c)
		}
	}
	if len(show) == 0 {
		if len(conns) > 0 {
			fmt.Fprintf(w, "observed %d connection(s), none with a rule action, retransmission, reset or a side left in CLOSE_WAIT/LAST_ACK/FIN_WAIT1\n", len(conns))
		}
		return 0
	}
	printed := 0
	for i, c := range show {
		if i == o.MaxConnections {
			fmt.Fprintf(w, "... %d more connection(s) not shown (--report FILE has them, up to the latest %d finished)\n", len(show)-i, observe.DefaultMaxConnections)
			break
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeTimeline(w, c, o.MaxEvents)
		printed++
	}
	return printed
}

type tlEvent struct {
	at   time.Time
	side string
	text string
}

func writeTimeline(w io.Writer, c observe.Connection, maxEvents int) {
	head := fmt.Sprintf("%v -> %v", c.Client.Addr, c.Server.Addr)
	if c.Incarnation > 1 {
		head += fmt.Sprintf(" (incarnation %d)", c.Incarnation)
	}
	var owners []string
	for _, s := range []struct {
		name string
		side observe.Side
	}{{"client", c.Client}, {"server", c.Server}} {
		if s.side.Owner != nil {
			owners = append(owners, fmt.Sprintf("%s pid %d (%s)", s.name, s.side.Owner.Pid, s.side.Owner.Comm))
		}
	}
	if len(owners) > 0 {
		head += "  " + strings.Join(owners, ", ")
	}
	fmt.Fprintln(w, head)

	evs := timelineEvents(c)
	if len(evs) == 0 {
		fmt.Fprintln(w, "  (no event)")
		return
	}
	base := evs[0].at
	for i, e := range evs {
		if i == maxEvents {
			fmt.Fprintf(w, "  ... %d more event(s)\n", len(evs)-i)
			break
		}
		fmt.Fprintf(w, "  +%9.3f ms  %-6s  %s\n", float64(e.at.Sub(base))/float64(time.Millisecond), e.side, e.text)
	}
	for _, s := range []struct {
		name string
		side observe.Side
	}{{"client", c.Client}, {"server", c.Server}} {
		if s.side.HandedToTimewait {
			fmt.Fprintf(w, "  %s: its full socket went to a timewait socket that sock_diag did not see (is that side's namespace in --observe-netns?)\n", s.name)
		}
		if tw := s.side.Timewait; tw != nil && !tw.Gone {
			fmt.Fprintf(w, "  %s: timewait socket in %s, timer fires in %v\n", s.name, tw.State, roundDur(time.Duration(tw.Remaining)))
		}
	}
	if c.NotesDropped > 0 {
		fmt.Fprintf(w, "  (%d segment(s) in the middle of the connection not kept)\n", c.NotesDropped)
	}
}

// timelineEvents merges everything known of a connection into one list in time order.
func timelineEvents(c observe.Connection) []tlEvent {
	var evs []tlEvent
	for _, s := range []struct {
		name string
		side observe.Side
	}{{"client", c.Client}, {"server", c.Server}} {
		for _, e := range s.side.States {
			text := e.State.String()
			switch {
			case e.Ongoing:
				text += fmt.Sprintf("  ongoing, %v so far", roundDur(time.Duration(e.Dwell)))
			case e.State != observe.Close:
				text += fmt.Sprintf("  for %v", roundDur(time.Duration(e.Dwell)))
			}
			if e.Source == observe.SourceDiag {
				text += "  [sock_diag]"
			}
			evs = append(evs, tlEvent{e.At, s.name, text})
		}
		for _, r := range s.side.Retransmits {
			text := "retransmit in " + r.State.String()
			if r.SynAck {
				text = "SYN-ACK retransmit (request socket)"
			}
			evs = append(evs, tlEvent{r.At, s.name, text})
		}
		for _, r := range s.side.ResetsSent {
			text := "RST sent"
			if r.State != observe.Unknown {
				text += " in " + r.State.String()
			}
			if r.Reason != "" {
				text += " (" + r.Reason + ")"
			}
			evs = append(evs, tlEvent{r.At, s.name, text})
		}
		for _, r := range s.side.ResetsReceived {
			evs = append(evs, tlEvent{r.At, s.name, "RST received"})
		}
		if tw := s.side.Timewait; tw != nil {
			for _, r := range tw.Restarts {
				evs = append(evs, tlEvent{r, s.name, "TIME_WAIT timer restarted (2*MSL again: it re-ACKed a retransmitted FIN)"})
			}
		}
	}
	var recs []rules.Record
	for _, n := range c.Notes {
		if n.Record != nil {
			recs = append(recs, *n.Record)
		}
	}
	isn := story.NewSeqBase(recs)
	for _, n := range c.Notes {
		side := "client"
		if n.Src == c.Server.Addr {
			side = "server"
		}
		text := n.Text
		if r := n.Record; r != nil {
			side, text = r.Side.String(), segmentText(*r, isn)
		}
		evs = append(evs, tlEvent{n.At, side, text})
	}
	slices.SortStableFunc(evs, func(a, b tlEvent) int { return a.at.Compare(b.at) })
	return evs
}

// segmentText describes a segment and its fate: "ACK seq=1001 ack=2 len=0  DROPPED by
// drop-final-ack".
func segmentText(r rules.Record, b story.SeqBase) string {
	seq, ack := b.Rel(r.Side, r.Seq, r.Ack)
	text := fmt.Sprintf("%s seq=%d", r.Flags, seq)
	if r.Flags.Has(segment.ACK) {
		text += fmt.Sprintf(" ack=%d", ack)
	}
	text += fmt.Sprintf(" len=%d  ", r.Len)
	if r.Verdict == rules.Drop {
		text += "DROPPED"
	} else {
		text += "accepted"
	}
	if r.Rule != "" {
		text += " by " + r.Rule
		var detail []string
		if r.Action != "" && r.Action != "drop" && r.Action != "pass" {
			detail = append(detail, r.Action)
		}
		if held := time.Duration(r.HeldNS); held >= 100*time.Microsecond {
			detail = append(detail, "held "+roundDur(held).String())
		}
		if len(detail) > 0 {
			text += " (" + strings.Join(detail, ", ") + ")"
		}
	}
	return text
}

// roundDur keeps about four significant digits.
func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
