package story

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/segment"
)

var (
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cAddr  = netip.MustParseAddrPort("198.18.1.2:40112")
	sAddr  = netip.MustParseAddrPort("198.18.2.2:8080")
	cISN   = uint32(4000000000)
	sISN   = uint32(7)
	ms     = func(f float64) time.Time { return t0.Add(time.Duration(f * float64(time.Millisecond))) }
	states = func(es ...any) []observe.StateEntry {
		var out []observe.StateEntry
		for i := 0; i < len(es); i += 2 {
			out = append(out, observe.StateEntry{State: es[i].(observe.State), At: ms(es[i+1].(float64)), Source: observe.SourceTrace})
		}
		for i := range out {
			if i+1 < len(out) {
				out[i].Dwell = observe.Duration(out[i+1].At.Sub(out[i].At))
			}
		}
		return out
	}
)

func rec(side eventlog.Side, flags segment.Flags, seq, ack uint32, rule string, v eventlog.Verdict, at time.Time) observe.Note {
	r := eventlog.Record{Time: at.UnixNano(), VerdictTime: at.UnixNano(), Client: cAddr, Server: sAddr, Side: side,
		Flags: flags, Seq: seq, Ack: ack, Rule: rule, Verdict: v}
	if rule != "" {
		r.Action = "drop"
	}
	src, dst := cAddr, sAddr
	if side == eventlog.Server {
		src, dst = sAddr, cAddr
	}
	return observe.Note{At: at, Src: src, Dst: dst, Text: RecordText(r), Record: &r}
}

// lostFinalACK is scenario 4 as the observer reports it.
func lostFinalACK() observe.Connection {
	c := observe.Connection{Incarnation: 1, FirstSeen: t0}
	c.Client = observe.Side{Addr: cAddr,
		States:   states(observe.SynSent, 0.0, observe.Established, 1.5, observe.FinWait1, 1.7, observe.FinWait2, 2.5, observe.TimeWait, 2.55),
		Timewait: &observe.Timewait{State: observe.TimeWait, Restarts: []time.Time{ms(214.9)}, Remaining: observe.Duration(59 * time.Second)},
		Owner:    &observe.Process{Pid: 812, Comm: "client"}}
	c.Client.States[4].Ongoing, c.Client.States[4].Dwell = true, observe.Duration(time.Second)
	c.Server = observe.Side{Addr: sAddr,
		States:      states(observe.SynRecv, 1.56, observe.Established, 1.57, observe.CloseWait, 2.3, observe.LastAck, 2.35, observe.Close, 215.3),
		Retransmits: []observe.RetransmitEntry{{State: observe.LastAck, At: ms(212.8)}}}
	c.Notes = []observe.Note{
		rec(eventlog.Client, segment.SYN, cISN, 0, "", eventlog.Accept, ms(1.0)),
		rec(eventlog.Server, segment.SYN|segment.ACK, sISN, cISN+1, "", eventlog.Accept, ms(1.4)),
		rec(eventlog.Client, segment.FIN|segment.ACK, cISN+1001, sISN+1, "", eventlog.Accept, ms(2.3)),
		rec(eventlog.Server, segment.FIN|segment.ACK, sISN+1, cISN+1002, "", eventlog.Accept, ms(2.5)),
		rec(eventlog.Client, segment.ACK, cISN+1002, sISN+2, "drop-final-ack", eventlog.Drop, ms(2.6)),
		rec(eventlog.Server, segment.FIN|segment.ACK, sISN+1, cISN+1002, "", eventlog.Accept, ms(214.7)),
		rec(eventlog.Client, segment.ACK, cISN+1002, sISN+2, "", eventlog.Accept, ms(215.2)),
	}
	return c
}

func plainClose(port uint16) observe.Connection {
	c := lostFinalACK()
	c.Client.Addr = netip.AddrPortFrom(cAddr.Addr(), port)
	c.Notes = nil
	c.Server.Retransmits = nil
	c.Client.Timewait.Restarts = nil
	return c
}

func TestWriteTimelines(t *testing.T) {
	var b bytes.Buffer
	n := WriteTimelines(&b, []observe.Connection{plainClose(1), lostFinalACK()}, TimelineOptions{})
	out := b.String()
	t.Logf("\n%s", out)
	if n != 1 || strings.Contains(out, ":1 ->") {
		t.Errorf("printed %d connections, want only the notable one", n)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "198.18.1.2:40112 -> 198.18.2.2:8080  client pid 812 (client)" {
		t.Errorf("header %q", lines[0])
	}
	for _, want := range []string{
		"  +    0.000 ms  client  SYN_SENT  for 1.5ms",
		"  +    1.000 ms  client  SYN seq=0 len=0  accepted",
		"  +    1.400 ms  server  SYN|ACK seq=0 ack=1 len=0  accepted",
		"  +    2.600 ms  client  ACK seq=1002 ack=2 len=0  DROPPED by drop-final-ack",
		"  +  212.800 ms  server  retransmit in LAST_ACK",
		"  +  214.700 ms  server  FIN|ACK seq=1 ack=1002 len=0  accepted",
		"  +  214.900 ms  client  TIME_WAIT timer restarted",
		"  +  215.300 ms  server  CLOSE",
		"  +    2.550 ms  client  TIME_WAIT  ongoing, 1s so far",
		"  client: timewait socket in TIME_WAIT, timer fires in 59s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Time order.
	var last float64 = -1
	for _, l := range lines[1:] {
		var f float64
		if _, err := fmtSscanf(l, &f); err != nil {
			continue
		}
		if f < last {
			t.Errorf("line out of order: %q", l)
		}
		last = f
	}
}

func TestWriteTimelinesCaps(t *testing.T) {
	var conns []observe.Connection
	for range 5 {
		conns = append(conns, lostFinalACK())
	}
	var b bytes.Buffer
	if n := WriteTimelines(&b, conns, TimelineOptions{MaxConnections: 2, MaxEvents: 3}); n != 2 {
		t.Errorf("printed %d, want 2", n)
	}
	out := b.String()
	if !strings.Contains(out, "... 3 more connection(s) not shown") || !strings.Contains(out, "more event(s)") {
		t.Errorf("no cut notes:\n%s", out)
	}
	b.Reset()
	WriteTimelines(&b, []observe.Connection{plainClose(1)}, TimelineOptions{})
	if !strings.HasPrefix(b.String(), "observed 1 connection(s), none with") {
		t.Errorf("plain close only: %q", b.String())
	}
}

// fmtSscanf reads the relative time of a timeline line.
func fmtSscanf(l string, f *float64) (int, error) {
	return fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "+")), "%f ms", f)
}

func TestRecordText(t *testing.T) {
	r := eventlog.Record{Side: eventlog.Client, Flags: segment.ACK, Seq: 5, Ack: 9, Rule: "drop-final-ack", Action: "drop", Verdict: eventlog.Drop, HeldNS: 1700}
	if got, want := RecordText(r), "client ACK seq=5 ack=9 len=0: drop by drop-final-ack"; got != want {
		t.Errorf("RecordText = %q, want %q", got, want)
	}
	r = eventlog.Record{Side: eventlog.Server, Flags: segment.FIN | segment.ACK, Rule: "hold-fin", Action: "hold", Verdict: eventlog.Accept, HeldNS: int64(12 * time.Millisecond)}
	if got, want := RecordText(r), "server FIN|ACK seq=0 ack=0 len=0: accept by hold-fin (hold, held 12ms)"; got != want {
		t.Errorf("RecordText = %q, want %q", got, want)
	}
	r = eventlog.Record{Side: eventlog.Client, Flags: segment.SYN, Verdict: eventlog.Accept}
	if got, want := RecordText(r), "client SYN seq=0 ack=0 len=0: accept"; got != want {
		t.Errorf("RecordText = %q, want %q", got, want)
	}
}

// run's timeline is in the story's order: at the same instant the segment comes before
// the state change (the client's FIN at 2.3 ms, then the server's CLOSE_WAIT), and a
// segment finproxy made stands when it was sent, not when it was scheduled.
func TestTimelineInTheStorysOrder(t *testing.T) {
	c := lostFinalACK()
	inj := eventlog.Record{Time: ms(3).UnixNano(), VerdictTime: ms(4).UnixNano(), Client: cAddr, Server: sAddr,
		Side: eventlog.Server, Flags: segment.RST, Seq: sISN + 2, Injected: true, Rule: "rst", Action: "inject-rst"}
	c.Notes = append(c.Notes, observe.Note{At: ms(3), Src: sAddr, Dst: cAddr, Record: &inj})
	var b bytes.Buffer
	WriteTimelines(&b, []observe.Connection{c}, TimelineOptions{})
	out := b.String()
	for _, want := range []string{
		"  +    2.300 ms  client  FIN|ACK seq=1001 ack=1 len=0  accepted\n  +    2.300 ms  server  CLOSE_WAIT  for 50µs\n",
		"  +    2.550 ms  client  TIME_WAIT  ongoing, 1s so far\n  +    2.600 ms  client  ACK seq=1002 ack=2 len=0  DROPPED by drop-final-ack\n  +    4.000 ms  server  RST seq=2 len=0  accepted by rst (inject-rst)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("timeline lacks\n%s\nin\n%s", want, out)
		}
	}
}
