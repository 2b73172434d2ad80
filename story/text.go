package story

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/segment"
)

// WriteLadder writes the story one line an event, as demo and a lab's failed run show
// it: the time from the first event, each segment with an arrow from its sender, its
// numbers and what finproxy did ("DROPPED by drop-final-ack"), each side's states,
// retransmissions and resets:
//
//	  +0.0 ms  client ──▶ SYN      seq=0 ack=- len=0  accepted
//	  +2.6 ms  client ──▶ ACK      seq=1002 ack=2 len=0  DROPPED by drop-final-ack
//	+212.8 ms  server     retransmits in LAST_ACK
func WriteLadder(w io.Writer, st Story) {
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	first := true
	for _, e := range st.Events {
		var text string
		switch e.Kind {
		case KindSegment:
			if first && !st.FromSYN {
				lines = append(lines, line{e.At.Add(-1), "(seq and ack relative to each side's first segment queued: the rules needed no handshake)"})
			}
			first = false
			text = ladderSegment(e.Segment)
		case KindState:
			text = fmt.Sprintf("%-6s     is %s", e.Side, e.State.To)
		case KindRetransmit:
			text = fmt.Sprintf("%-6s     retransmits in %s", e.Side, e.In)
		case KindResetSent:
			text = fmt.Sprintf("%-6s     sends RST (%s)", e.Side, e.Reason)
		case KindResetReceived:
			text = fmt.Sprintf("%-6s     receives RST", e.Side)
		default:
			continue // not on the ladder
		}
		lines = append(lines, line{e.At, text})
	}
	if len(lines) == 0 {
		fmt.Fprintln(w, "   (nothing was seen)")
		return
	}
	t0 := lines[0].at
	for _, l := range lines {
		fmt.Fprintf(w, "   %+9.1f ms  %s\n", float64(l.at.Sub(t0))/1e6, l.text)
	}
}

// ladderSegment is a segment's line of WriteLadder.
func ladderSegment(s *Segment) string {
	r := &s.Record
	ack := fmt.Sprint(s.Ack)
	if !r.Flags.Has(segment.ACK) {
		ack = "-"
	}
	verdict := "accepted"
	switch {
	case r.Injected && r.Verdict == eventlog.Drop:
		verdict = "NOT SENT (injection failed)"
	case r.Injected:
		verdict = "INJECTED"
	case r.Verdict == eventlog.Drop:
		verdict = "DROPPED"
	case r.Modified:
		verdict = "accepted REWRITTEN"
	}
	if r.Rule != "" {
		verdict += " by " + r.Rule
		if r.HeldNS > int64(time.Millisecond) && !r.Injected {
			verdict += fmt.Sprintf(" after %s %.0f ms", r.Action, float64(r.HeldNS)/1e6)
		}
	}
	arrow := "──▶"
	if r.Side == eventlog.Server {
		arrow = "◀──"
	}
	return fmt.Sprintf("%-6s %s %-8s seq=%d ack=%s len=%d  %s", r.Side, arrow, r.Flags, s.Seq, ack, r.Len, verdict)
}

// RecordText describes a record alone, its numbers as they were: "client ACK seq=...
// ack=... len=0: drop by drop-final-ack", "server FIN|ACK ...: accept by hold-fin (hold,
// held 12ms)". It is the text of finproxy run's notes in its report.
func RecordText(r eventlog.Record) string {
	s := fmt.Sprintf("%s %s seq=%d ack=%d len=%d: %s", r.Side, r.Flags, r.Seq, r.Ack, r.Len, r.Verdict)
	if r.Rule == "" {
		return s
	}
	s += " by " + r.Rule
	var detail []string
	if r.Action != "" && r.Action != r.Verdict.String() && r.Action != "pass" {
		detail = append(detail, r.Action)
	}
	if held := time.Duration(r.HeldNS); held >= 100*time.Microsecond {
		detail = append(detail, "held "+held.Round(time.Microsecond).String())
	}
	if len(detail) > 0 {
		s += " (" + strings.Join(detail, ", ") + ")"
	}
	return s
}

// RoundDuration keeps about four significant digits of d.
func RoundDuration(d time.Duration) time.Duration {
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
