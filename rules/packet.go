package rules

import (
	"time"

	"github.com/finproxy/finproxy/eventlog"
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

// Record is one line of the event log: a queued segment and what became of it (see
// eventlog.Record). It is written when the segment's verdict is given.
type Record = eventlog.Record

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
