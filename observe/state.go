package observe

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
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseState parses a state name as the kernel prints it ("TCP_FIN_WAIT1") or as
// finproxy does ("FIN_WAIT1").
func ParseState(name string) (State, error) {
	n := strings.TrimPrefix(name, "TCP_")
	for i, s := range stateNames {
		if s == n {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q", name)
}

// TimerKind is the kind of timer sock_diag reports for a socket (idiag_timer), named as ss
// names it.
type TimerKind uint8

// Timer kinds as inet_diag numbers them.
const (
	TimerOff       TimerKind = 0 // no timer pending
	TimerRetrans   TimerKind = 1 // retransmission (also SYN-ACK of a request socket, loss probe)
	TimerKeepalive TimerKind = 2 // keepalive, or the FIN_WAIT2 timeout of an orphaned full socket
	TimerTimewait  TimerKind = 3 // a timewait socket's timer (TIME_WAIT or timewait FIN_WAIT2)
	TimerPersist   TimerKind = 4 // zero-window probe
)

var timerNames = [...]string{"off", "on", "keepalive", "timewait", "persist"}

func (k TimerKind) String() string {
	if int(k) < len(timerNames) {
		return timerNames[k]
	}
	return fmt.Sprintf("timer(%d)", uint8(k))
}

// MarshalText gives the timer's name as ss prints it ("on" is the retransmission timer).
func (k TimerKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses a name given by MarshalText.
func (k *TimerKind) UnmarshalText(b []byte) error {
	for i, n := range timerNames {
		if n == string(b) {
			*k = TimerKind(i)
			return nil
		}
	}
	return fmt.Errorf("unknown timer kind %q", b)
}
