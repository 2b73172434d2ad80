package story

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/observe"
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

// WriteTimelines prints finproxy run's observed connections at exit: for each notable
// connection (every one with All), its story (FromNotes) one line an event, relative to
// its first event: the states each side entered (with their dwell), the segments
// finproxy saw with their verdicts, the retransmissions with the state they happened in,
// resets and TIME_WAIT timer restarts:
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
		writeTimeline(w, &c, o.MaxEvents)
		printed++
	}
	return printed
}

func writeTimeline(w io.Writer, c *observe.Connection, maxEvents int) {
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

	st := FromNotes(c)
	if len(st.Events) == 0 {
		fmt.Fprintln(w, "  (no event)")
		return
	}
	base := st.Events[0].At
	for i, e := range st.Events {
		if i == maxEvents {
			fmt.Fprintf(w, "  ... %d more event(s)\n", len(st.Events)-i)
			break
		}
		fmt.Fprintf(w, "  +%9.3f ms  %-6s  %s\n", float64(e.At.Sub(base))/float64(time.Millisecond), e.Side, timelineText(e))
	}
	for _, s := range []struct {
		name string
		side observe.Side
	}{{"client", c.Client}, {"server", c.Server}} {
		if s.side.HandedToTimewait {
			fmt.Fprintf(w, "  %s: its full socket went to a timewait socket that sock_diag did not see (is that side's namespace in --observe-netns?)\n", s.name)
		}
		if tw := s.side.Timewait; tw != nil && !tw.Gone {
			fmt.Fprintf(w, "  %s: timewait socket in %s, timer fires in %v\n", s.name, tw.State, RoundDuration(time.Duration(tw.Remaining)))
		}
	}
	if c.NotesDropped > 0 {
		fmt.Fprintf(w, "  (%d segment(s) in the middle of the connection not kept)\n", c.NotesDropped)
	}
}

// timelineText is an event's text in WriteTimelines.
func timelineText(e Event) string {
	switch e.Kind {
	case KindSegment:
		return timelineSegment(e.Segment)
	case KindState:
		text := e.State.To.String()
		switch {
		case e.State.Ongoing:
			text += fmt.Sprintf("  ongoing, %v so far", RoundDuration(time.Duration(e.State.Dwell)))
		case e.State.To != observe.Close:
			text += fmt.Sprintf("  for %v", RoundDuration(time.Duration(e.State.Dwell)))
		}
		if e.State.Source == observe.SourceDiag {
			text += "  [sock_diag]"
		}
		return text
	case KindRetransmit:
		if e.SynAck {
			return "SYN-ACK retransmit (request socket)"
		}
		return "retransmit in " + e.In.String()
	case KindResetSent:
		text := "RST sent"
		if e.In != observe.Unknown {
			text += " in " + e.In.String()
		}
		if e.Reason != "" {
			text += " (" + e.Reason + ")"
		}
		return text
	case KindResetReceived:
		return "RST received"
	case KindTimewaitRestart:
		return "TIME_WAIT timer restarted (2*MSL again: it re-ACKed a retransmitted FIN)"
	}
	return e.Text
}

// timelineSegment describes a segment and its fate: "ACK seq=1001 ack=2 len=0  DROPPED by
// drop-final-ack".
func timelineSegment(s *Segment) string {
	r := &s.Record
	text := s.Label() + "  "
	if r.Verdict == eventlog.Drop {
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
			detail = append(detail, "held "+RoundDuration(held).String())
		}
		if len(detail) > 0 {
			text += " (" + strings.Join(detail, ", ") + ")"
		}
	}
	return text
}
