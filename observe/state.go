package observe

import (
	"fmt"

	"github.com/finproxy/finproxy/tcpstate"
)

// State is a TCP state with the kernel's numbering (package tcpstate).
type State = tcpstate.State

// The kernel's TCP states.
const (
	Unknown     = tcpstate.Unknown
	Established = tcpstate.Established
	SynSent     = tcpstate.SynSent
	SynRecv     = tcpstate.SynRecv
	FinWait1    = tcpstate.FinWait1
	FinWait2    = tcpstate.FinWait2
	TimeWait    = tcpstate.TimeWait
	Close       = tcpstate.Close
	CloseWait   = tcpstate.CloseWait
	LastAck     = tcpstate.LastAck
	Listen      = tcpstate.Listen
	Closing     = tcpstate.Closing
	NewSynRecv  = tcpstate.NewSynRecv
)

// ParseState parses a state name as the kernel prints it ("TCP_FIN_WAIT1") or as
// finproxy does ("FIN_WAIT1").
func ParseState(name string) (State, error) { return tcpstate.Parse(name) }

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
