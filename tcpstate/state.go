package tcpstate

import (
	"fmt"
	"strings"
)

// State is a TCP state with the kernel's numbering (include/net/tcp_states.h).
// Its text form is the kernel's name without the TCP_ prefix: ESTABLISHED, FIN_WAIT2, ...
// The zero State is UNKNOWN: tcp_send_reset reports it for a reset sent without a socket.
type State uint8

// The kernel's TCP states.
const (
	Unknown     State = 0
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
	NewSynRecv  State = 12
)

var stateNames = [...]string{
	Unknown:     "UNKNOWN",
	Established: "ESTABLISHED",
	SynSent:     "SYN_SENT",
	SynRecv:     "SYN_RECV",
	FinWait1:    "FIN_WAIT1",
	FinWait2:    "FIN_WAIT2",
	TimeWait:    "TIME_WAIT",
	Close:       "CLOSE",
	CloseWait:   "CLOSE_WAIT",
	LastAck:     "LAST_ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "NEW_SYN_RECV",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// MarshalText gives the kernel's name, as String.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText accepts a name with or without the TCP_ prefix.
func (s *State) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Parse parses a state name as the kernel prints it ("TCP_FIN_WAIT1") or as
// finproxy does ("FIN_WAIT1").
func Parse(name string) (State, error) {
	n := strings.TrimPrefix(name, "TCP_")
	for i, s := range stateNames {
		if s == n {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q", name)
}

// Expectable are the states a socket of a connection goes through, in that order (no
// UNKNOWN, no NEW_SYN_RECV, which is a request socket's): the names [expect] takes.
var Expectable = []State{Listen, SynSent, SynRecv, Established, FinWait1, FinWait2,
	CloseWait, Closing, LastAck, TimeWait, Close}

// ExpectableNames are Expectable's names.
func ExpectableNames() []string {
	out := make([]string, len(Expectable))
	for i, s := range Expectable {
		out[i] = s.String()
	}
	return out
}
