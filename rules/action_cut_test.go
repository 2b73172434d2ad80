package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/finproxy/finproxy/segment"
)

// cut lets exactly bytes through: the crossing segment leaves cut, later data is
// dropped, the server is reset at once and the client once it acknowledged the last byte.
func TestCutAtLimit(t *testing.T) {
	paramErr(t, (&CutAction{Bytes: -1}).Validate(), "bytes")
	m := stallHarness(t, rule("ld", Match{Side: Server, Payload: 1}, "cut", &CutAction{Bytes: 150}))
	a := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1001, 100))
	b := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH|segment.FIN, 5101, 1001, 100))
	c := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5201, 1001, 100))
	if m.verdicts[a] != Accept || m.out[a] != nil {
		t.Errorf("first 100 bytes: %s, modified %v; want accepted as they were", m.verdicts[a], m.out[a] != nil)
	}
	if got := m.outSeg(b); got == nil || len(got.Payload()) != 50 || got.Flags()&segment.FIN != 0 || got.Seq() != 5101 {
		t.Errorf("crossing segment left as %v, want 50 bytes at 5101 without FIN", got)
	}
	if m.verdicts[c] != Drop {
		t.Errorf("data past the limit: %s, want drop", m.verdicts[c])
	}
	// Toward the server at once (at the client's next, 1001); toward the client once it
	// acknowledged 5151.
	if got := m.rsts(); fmt.Sprint(got) != "[client RST|ACK seq=1001]" {
		t.Errorf("RSTs before the client's ACK: %v", got)
	}
	m.handle(seg(testClient, testServer, segment.ACK, 1001, 5101, 0))
	if got := m.rsts(); len(got) != 1 {
		t.Errorf("RST toward the client before its ACK of the last byte: %v", got)
	}
	m.handle(seg(testClient, testServer, segment.ACK, 1001, 5151, 0))
	if got := m.rsts(); fmt.Sprint(got) != "[client RST|ACK seq=1001 server RST|ACK seq=5151]" {
		t.Errorf("RSTs after the client's ACK: %v", got)
	}
	// A retransmission within the limit passes; nothing is sent again.
	if d := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1001, 100)); m.verdicts[d] != Accept {
		t.Errorf("retransmission within the limit: %s", m.verdicts[d])
	}
	if got := m.rsts(); len(got) != 2 {
		t.Errorf("RSTs sent again: %v", got)
	}
}

// bytes = 0: the first data segment is dropped and the connection reset; the RST toward
// the client goes after a second if it never acknowledges.
func TestCutZero(t *testing.T) {
	m := stallHarness(t, rule("ld", Match{Side: Server, Payload: 1}, "cut", &CutAction{}))
	if a := m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001, 1001, 100)); m.verdicts[a] != Drop {
		t.Errorf("first data under bytes = 0: %s", m.verdicts[a])
	}
	m.clk.Advance(cutAckWait)
	if got := m.rsts(); fmt.Sprint(got) != "[client RST|ACK seq=1001 server RST|ACK seq=5001]" {
		t.Errorf("RSTs %v", got)
	}
}

// pace spaces a side's data at its rate, per connection, and drops past its queue.
func TestPace(t *testing.T) {
	paramErr(t, (&PaceAction{}).Validate(), "rate")
	paramErr(t, (&PaceAction{Rate: 1, Queue: -1}).Validate(), "queue")
	m := stallHarness(t, rule("bw", Match{Side: Server, Payload: 1}, "pace", &PaceAction{Rate: 10000, Queue: Duration(350 * time.Millisecond)}))
	var ids []uint32
	for i := range 4 {
		ids = append(ids, m.handle(seg(testServer, testClient, segment.ACK|segment.PSH, 5001+uint32(i)*1000, 1001, 1000)))
	}
	// 1000 bytes at 10000 B/s: 100 ms each, charged before they leave; the fourth would
	// wait 400 ms > 350 ms.
	if m.verdicts[ids[3]] != Drop {
		t.Errorf("segment past the queue: %s, want drop", m.verdicts[ids[3]])
	}
	m.clk.Advance(400 * time.Millisecond)
	var held []string
	for _, r := range m.records {
		if r.Rule == "bw" {
			held = append(held, time.Duration(r.HeldNS).String()+" "+r.Verdict.String())
		}
	}
	if want := "[0s drop 100ms accept 200ms accept 300ms accept]"; fmt.Sprint(held) != want {
		t.Errorf("paced: %v, want %s (in verdict order)", held, want)
	}
	m.wantCounters(Counters{Rule: "bw", Matched: 4, Dropped: 1, Delayed: 3})
}
