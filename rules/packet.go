package rules

import (
	"net/netip"
	"time"

	"github.com/finproxy/finproxy/segment"
)

// Packet is one queued segment awaiting its verdict.
type Packet struct {
	// ID is the queue's packet id; the Sink gets it back with the verdict.
	ID uint32
	// Time is when the segment was queued.
	Time time.Time
	// Seg is the decoded segment.
	Seg segment.Segment
	// Data is the whole IP packet. It may point into a receive buffer: the engine copies it
	// if it needs it after Handle returns.
	Data []byte
}

// Sink takes verdicts, possibly later than Handle and from another goroutine.
type Sink interface {
	Verdict(id uint32, v Verdict) error
}

// Record is one line of the event log: a queued segment and what became of it.
// It is written when the segment's verdict is given.
type Record struct {
	// ID is the queue's packet id (0 for a segment finproxy made itself). Not in the log:
	// ids repeat across runs; it lets a consumer in the same process (a pcap writer) pair
	// the record with the packet it saw queued.
	ID uint32 `json:"-"`
	// Time is when the segment was queued (Unix ns).
	Time int64 `json:"time_ns"`
	// VerdictTime is when its verdict was given (Unix ns).
	VerdictTime int64 `json:"verdict_time_ns"`
	// Client and Server identify the connection; Side says which of them sent the segment.
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`
	// Incarnation numbers the connections finproxy saw on this 4-tuple, from 1: a new
	// SYN after the previous connection ended starts the next (0: not tracked).
	Incarnation int           `json:"incarnation,omitempty"`
	Side        Side          `json:"side"`
	Flags       segment.Flags `json:"flags"`
	Seq         uint32        `json:"seq"`
	Ack         uint32        `json:"ack"`
	Len         int           `json:"len"`
	// Rule is the name of the rule that acted on the segment ("" when none matched).
	Rule string `json:"rule,omitempty"`
	// Action is what the rule did (drop, delay, hold, merge, ...), "" when none matched.
	Action  string  `json:"action,omitempty"`
	Verdict Verdict `json:"verdict"`
	// HeldNS is how long the segment waited in finproxy before its verdict.
	HeldNS int64 `json:"held_ns"`
	// Modified is set when the segment left changed (rewritten by an action); Injected when
	// finproxy made it (it was never queued). Out is then the IP packet as it left (not in
	// the JSON log; for in-process consumers such as a pcap writer).
	Modified bool   `json:"modified,omitempty"`
	Injected bool   `json:"injected,omitempty"`
	Out      []byte `json:"-"`
}

// MarshalText renders the verdict as in the event log ("accept" or "drop").
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// Counters are what a rule did over a run.
type Counters struct {
	Rule    string `json:"rule"`
	Matched uint64 `json:"matched"`
	Passed  uint64 `json:"passed"`
	Dropped uint64 `json:"dropped"`
	Delayed uint64 `json:"delayed"`
	Held    uint64 `json:"held"`
	Merged  uint64 `json:"merged"`
	// Modified counts the segments that left rewritten by the rule (whatever their fate
	// above), Injected the segments it made and sent.
	Modified uint64 `json:"modified"`
	Injected uint64 `json:"injected"`
	// Panicked counts the times the rule's action (or a condition it handed the engine:
	// a hold's, an injection's) panicked: the segment was then accepted as it came, the
	// fault did not happen. Nonzero is a bug, in finproxy or in a new action.
	Panicked uint64 `json:"panicked,omitempty"`
}
