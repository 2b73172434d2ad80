package eventlog

import (
	"fmt"
	"net/netip"

	"github.com/finproxy/finproxy/segment"
)

// Side is one endpoint of a tracked connection.
type Side uint8

// Sides. The client is the endpoint that sent the SYN.
const (
	AnySide Side = iota
	Client
	Server
)

func (s Side) String() string {
	switch s {
	case Client:
		return "client"
	case Server:
		return "server"
	}
	return "any"
}

// Other returns the peer of s (Client for Server and the reverse); AnySide stays AnySide.
func (s Side) Other() Side {
	switch s {
	case Client:
		return Server
	case Server:
		return Client
	}
	return AnySide
}

// MarshalText renders the side as in the TOML files.
func (s Side) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a side as written by MarshalText.
func (s *Side) UnmarshalText(b []byte) error {
	v, err := ParseSide(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSide parses "client", "server" or "any".
func ParseSide(v string) (Side, error) {
	switch v {
	case "client":
		return Client, nil
	case "server":
		return Server, nil
	case "any", "":
		return AnySide, nil
	}
	return 0, fmt.Errorf("unknown side %q (want client, server or any)", v)
}

// Verdict is the fate of a queued segment.
type Verdict uint8

// Verdicts.
const (
	Accept Verdict = iota
	Drop
)

func (v Verdict) String() string {
	if v == Drop {
		return "drop"
	}
	return "accept"
}

// MarshalText renders the verdict as in the event log ("accept" or "drop").
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText parses a verdict as written by MarshalText.
func (v *Verdict) UnmarshalText(b []byte) error {
	x, err := ParseVerdict(string(b))
	if err != nil {
		return err
	}
	*v = x
	return nil
}

// ParseVerdict parses "pass"/"accept" or "drop".
func ParseVerdict(v string) (Verdict, error) {
	switch v {
	case "pass", "accept":
		return Accept, nil
	case "drop":
		return Drop, nil
	}
	return 0, fmt.Errorf("unknown verdict %q (want pass or drop)", v)
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
