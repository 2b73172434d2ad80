package story

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/segment"
)

const (
	Client = eventlog.Client
	Server = eventlog.Server
	fSYN   = segment.SYN
	fACK   = segment.ACK
	fFIN   = segment.FIN
	fRST   = segment.RST
)

type Record = eventlog.Record

// Relative numbers: from the SYNs when queued, else from each side's first segment.
func TestSeqBase(t *testing.T) {
	withSYN := []Record{
		{Side: Client, Flags: fSYN, Seq: 1000},
		{Side: Server, Flags: fSYN | fACK, Seq: 5000, Ack: 1001},
		{Side: Client, Flags: fFIN | fACK, Seq: 2001, Ack: 5001},
	}
	b := NewSeqBase(withSYN)
	if s, a := b.Rel(Client, 2001, 5001); !b.FromSYN() || s != 1001 || a != 1 {
		t.Errorf("from SYN: %d %d %v", s, a, b.FromSYN())
	}
	noSYN := []Record{
		{Side: Client, Flags: fFIN | fACK, Seq: 2001, Ack: 5001},
		{Side: Server, Flags: fACK, Seq: 5001, Ack: 2002},
	}
	b = NewSeqBase(noSYN)
	if s, a := b.Rel(Server, 5001, 2002); b.FromSYN() || s != 0 || a != 1 {
		t.Errorf("no SYN: %d %d %v", s, a, b.FromSYN())
	}
	// A side never seen takes its base from the peer's first ACK.
	b = NewSeqBase(noSYN[:1])
	if s, a := b.Rel(Server, 5001, 2002); !b.HaveServer || s != 0 || a != 1 {
		t.Errorf("server from the client's ack: %d %d", s, a)
	}
	// Injected segments are not the sides' own.
	b = NewSeqBase([]Record{{Side: Client, Flags: fRST, Seq: 9, Injected: true}, noSYN[0]})
	if b.Client != 2001 {
		t.Errorf("base from an injected segment: %d", b.Client)
	}
}

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// fourWay is a connection with its records: handshake, the client's FIN, the server's
// FIN retransmitted once (its first copy dropped), the final ACKs.
func fourWay(client, server string) ([]Record, *observe.Connection) {
	c, s := netip.MustParseAddrPort(client), netip.MustParseAddrPort(server)
	const cISN, sISN = 4000000000, 7 // the client's wraps around
	rec := func(ms float64, side eventlog.Side, flags segment.Flags, seq, ack uint32) Record {
		return Record{Time: at(ms).UnixNano(), VerdictTime: at(ms).UnixNano(), Client: c, Server: s, Incarnation: 1,
			Side: side, Flags: flags, Seq: seq, Ack: ack}
	}
	recs := []Record{
		rec(1, Client, fSYN, cISN, 0),
		rec(1.2, Server, fSYN|fACK, sISN, cISN+1),
		rec(1.4, Client, fACK, cISN+1, sISN+1),
		rec(2, Client, fFIN|fACK, cISN+1, sISN+1),
		rec(2.2, Server, fACK, sISN+1, cISN+2),
		rec(3, Server, fFIN|fACK, sISN+1, cISN+2),
		rec(210, Server, fFIN|fACK, sISN+1, cISN+2),
		rec(210.1, Client, fACK, cISN+2, sISN+2),
	}
	recs[5].Verdict, recs[5].Rule, recs[5].Action = eventlog.Drop, "drop-fin", "drop"
	conn := &observe.Connection{Incarnation: 1, FirstSeen: at(1),
		Client: observe.Side{Addr: c, States: []observe.StateEntry{
			{State: observe.SynSent, At: at(0.9)}, {State: observe.Established, At: at(1.3)},
			{State: observe.FinWait1, At: at(2)}, {State: observe.FinWait2, At: at(2.3)}, {State: observe.TimeWait, At: at(210.1)}}},
		Server: observe.Side{Addr: s, States: []observe.StateEntry{
			{State: observe.SynRecv, At: at(1.45)}, {State: observe.Established, At: at(1.45)},
			{State: observe.CloseWait, At: at(2.1)}, {State: observe.LastAck, At: at(3)}, {State: observe.Close, At: at(210.2)}},
			Retransmits: []observe.RetransmitEntry{{State: observe.LastAck, At: at(209.9)}}},
	}
	return recs, conn
}

// Relative numbers from both sides' SYNs, computed once for every segment (the
// client's initial number wraps around).
func TestRelativeNumbersBothSides(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	st := New(recs, conn)
	if !st.FromSYN {
		t.Fatal("numbers not from the SYNs")
	}
	var got []string
	for _, s := range st.Segments() {
		got = append(got, s.Record.Side.String()+" "+s.Label())
	}
	want := []string{
		"client SYN seq=0 len=0",
		"server SYN|ACK seq=0 ack=1 len=0",
		"client ACK seq=1 ack=1 len=0",
		"client FIN|ACK seq=1 ack=1 len=0",
		"server ACK seq=1 ack=2 len=0",
		"server FIN|ACK seq=1 ack=2 len=0",
		"server FIN|ACK seq=1 ack=2 len=0",
		"client ACK seq=2 ack=2 len=0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("segments\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without the handshake: relative to each side's first segment, and said so.
	st = New(recs[3:], conn)
	if st.FromSYN {
		t.Error("FromSYN without the SYNs")
	}
	if s := st.Segments()[0]; s.Seq != 0 || s.Ack != 0 {
		t.Errorf("first segment without the SYNs: seq %d ack %d, want 0 0", s.Seq, s.Ack)
	}
}

// A segment and a state change at the same instant: the segment first, then the
// client's events, then the server's; otherwise time order.
func TestOrderAtTheSameTime(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	st := New(recs, conn)
	for i := 1; i < len(st.Events); i++ {
		if st.Events[i].At.Before(st.Events[i-1].At) {
			t.Fatalf("event %d before event %d", i, i-1)
		}
	}
	var atTwo []string
	for _, e := range st.Events {
		if e.At.Equal(at(2)) || e.At.Equal(at(3)) {
			s := e.Side.String() + " " + e.Kind.String()
			if e.State != nil {
				s += " " + e.State.From.String() + "→" + e.State.To.String()
			}
			atTwo = append(atTwo, s)
		}
	}
	want := []string{"client segment", "client state ESTABLISHED→FIN_WAIT1", "server segment", "server state CLOSE_WAIT→LAST_ACK"}
	if strings.Join(atTwo, ", ") != strings.Join(want, ", ") {
		t.Errorf("at the same time: %v, want %v", atTwo, want)
	}
}

// The FIN sent again is a retransmission; the kernel's report of it is an event of its
// own; a pure ACK repeated is not one.
func TestRetransmission(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	recs = append(recs, recs[7])
	recs[8].Time += int64(time.Millisecond)
	st := New(recs, conn)
	var retx []int
	for i, s := range st.Segments() {
		if s.Retransmission {
			retx = append(retx, i)
		}
	}
	if len(retx) != 1 || retx[0] != 6 {
		t.Errorf("retransmissions at %v, want [6] (the server's second FIN)", retx)
	}
	n := 0
	for _, e := range st.Events {
		if e.Kind == KindRetransmit {
			n++
			if e.Side != Server || e.In != observe.LastAck || !e.At.Equal(at(209.9)) {
				t.Errorf("kernel's retransmission %+v", e)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d retransmission events, want 1", n)
	}
}

// IPv4 and IPv6 alike; a record naming a v4-mapped address belongs to the IPv4
// connection; another connection's records and another incarnation's are left out.
func TestBothFamilies(t *testing.T) {
	for _, c := range []struct{ name, client, server string }{
		{"ipv4", "198.18.1.2:40112", "198.18.2.2:8080"},
		{"ipv6", "[fd00:1::2]:40112", "[fd00:2::2]:8080"},
	} {
		t.Run(c.name, func(t *testing.T) {
			recs, conn := fourWay(c.client, c.server)
			other := recs[0]
			other.Client = netip.AddrPortFrom(other.Client.Addr(), 1)
			later := recs[0]
			later.Incarnation = 2
			all := append(append([]Record{}, recs...), other, later)
			if conn.Client.Addr.Addr().Is4() {
				mapped := recs[1]
				mapped.Client = netip.AddrPortFrom(netip.AddrFrom16(conn.Client.Addr.Addr().As16()), conn.Client.Addr.Port())
				mapped.Time++
				all = append(all, mapped)
			}
			st := New(all, conn)
			want := len(recs)
			if conn.Client.Addr.Addr().Is4() {
				want++
			}
			if n := len(st.Segments()); n != want {
				t.Errorf("%d segments, want %d", n, want)
			}
			if st.Client != conn.Client.Addr || st.Server != conn.Server.Addr || st.Segments()[1].Label() != "SYN|ACK seq=0 ack=1 len=0" {
				t.Errorf("story of %v -> %v, second segment %q", st.Client, st.Server, st.Segments()[1].Label())
			}
		})
	}
}

// finproxy run's records come on the notes, at the notes' times: the same story as the
// records given; a note of text only is an event of its side; a segment finproxy made
// stands where it was sent.
func TestFromNotes(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	want := New(recs, conn)
	for i := range recs {
		r := recs[i]
		src, dst := r.Client, r.Server
		if r.Side == Server {
			src, dst = dst, src
		}
		conn.Notes = append(conn.Notes, observe.Note{At: time.Unix(0, r.Time), Src: src, Dst: dst, Record: &r})
	}
	got := FromNotes(conn)
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Errorf("from notes\n%s\nwant\n%s", b, a)
	}
	conn.Notes = append(conn.Notes, observe.Note{At: at(5), Src: conn.Server.Addr, Dst: conn.Client.Addr, Text: "hello"})
	inj := Record{Time: at(4).UnixNano(), VerdictTime: at(6).UnixNano(), Client: conn.Client.Addr, Server: conn.Server.Addr,
		Side: Server, Flags: fRST, Injected: true, Rule: "rst"}
	conn.Notes = append(conn.Notes, observe.Note{At: at(4), Record: &inj})
	got = FromNotes(conn)
	var kinds []string
	for _, e := range got.Events {
		if e.At.After(at(3.5)) && e.At.Before(at(7)) {
			kinds = append(kinds, e.Side.String()+" "+e.Kind.String()+" "+e.Text)
		}
	}
	if strings.Join(kinds, ",") != "server note hello,server segment " {
		t.Errorf("between 3.5 and 7 ms: %q, want the note then the injected RST (at its verdict time)", kinds)
	}
}

// The JSON renderer: the connection, and every event with its kind by name.
func TestJSON(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	var b bytes.Buffer
	if err := WriteJSON(&b, New(recs, conn)); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Client  string `json:"client"`
		FromSYN bool   `json:"from_syn"`
		Events  []struct {
			Kind    string `json:"kind"`
			Side    string `json:"side"`
			Segment *struct {
				Seq    uint32 `json:"rel_seq"`
				Record struct {
					Seq     uint32 `json:"seq"`
					Verdict string `json:"verdict"`
				} `json:"record"`
			} `json:"segment"`
			State *struct{ From, To string } `json:"state"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got.Client != "198.18.1.2:40112" || !got.FromSYN || len(got.Events) != 19 {
		t.Fatalf("story %+v", got)
	}
	var drop, state bool
	for _, e := range got.Events {
		if s := e.Segment; e.Kind == "segment" && s != nil && s.Record.Verdict == "drop" && s.Seq == 1 && s.Record.Seq == 8 && e.Side == "server" {
			drop = true
		}
		if e.Kind == "state" && e.State != nil && e.State.From == "CLOSE_WAIT" && e.State.To == "LAST_ACK" {
			state = true
		}
	}
	if !drop || !state {
		t.Errorf("dropped FIN %v, CLOSE_WAIT→LAST_ACK %v:\n%s", drop, state, b.String())
	}
	b.Reset()
	if err := WriteJSON(&b, New(nil, nil)); err != nil || !strings.Contains(b.String(), `"events":[]`) {
		t.Errorf("empty story: %s %v", b.String(), err)
	}
}

// The ladder of demo and of a lab's failed run: arrows by sender, numbers relative to
// the SYNs ("-" for no acknowledgment), finproxy's verdicts, the sides' states and
// retransmissions, times from the first event; without the handshake it says so first.
func TestWriteLadder(t *testing.T) {
	recs, conn := fourWay("198.18.1.2:40112", "198.18.2.2:8080")
	recs[6].Rule, recs[6].Action, recs[6].HeldNS = "hold-fin", "hold", int64(40*time.Millisecond)
	inj := Record{Time: at(5).UnixNano(), VerdictTime: at(6).UnixNano(), Client: conn.Client.Addr, Server: conn.Server.Addr,
		Side: Server, Flags: fRST | fACK, Seq: 8, Ack: 4000000002, Injected: true, Rule: "rst"}
	var b bytes.Buffer
	WriteLadder(&b, New(append(recs, inj), conn))
	out := b.String()
	for _, want := range []string{
		"        +0.0 ms  client     is SYN_SENT\n        +0.1 ms  client ──▶ SYN      seq=0 ack=- len=0  accepted\n",
		"       +2.1 ms  server ◀── FIN|ACK  seq=1 ack=2 len=0  DROPPED by drop-fin\n        +2.1 ms  server     is LAST_ACK\n",
		"       +5.1 ms  server ◀── RST|ACK  seq=1 ack=2 len=0  INJECTED by rst\n",
		"     +209.0 ms  server     retransmits in LAST_ACK\n      +209.1 ms  server ◀── FIN|ACK  seq=1 ack=2 len=0  accepted by hold-fin after hold 40 ms\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ladder lacks\n%s", want)
		}
	}
	if t.Failed() {
		t.Logf("ladder:\n%s", out)
	}
	b.Reset()
	WriteLadder(&b, New(recs[3:4], nil))
	if got := b.String(); got != "        +0.0 ms  (seq and ack relative to each side's first segment queued: the rules needed no handshake)\n        +0.0 ms  client ──▶ FIN|ACK  seq=0 ack=0 len=0  accepted\n" {
		t.Errorf("without the handshake:\n%s", got)
	}
	b.Reset()
	WriteLadder(&b, New(nil, nil))
	if b.String() != "   (nothing was seen)\n" {
		t.Errorf("nothing: %q", b.String())
	}
}
