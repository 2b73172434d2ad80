package observe

import (
	"encoding/json"
	"net/netip"
	"time"
)

// Event is one observation: a tracepoint record parsed by ParseLine (StateChange,
// Retransmit, ResetSent, ResetReceived, and the bookkeeping records Marker and Lost), or a
// state change the Observer derived from sock_diag (a StateChange with Source "sock_diag").
type Event interface{ event() }

// EventMeta is what every socket event carries.
type EventMeta struct {
	// Mono is the kernel's CLOCK_MONOTONIC time of the event (trace_clock "mono",
	// microsecond resolution in trace_pipe's text).
	Mono time.Duration `json:"mono_ns"`
	// Time is Mono on the wall clock, set by the Observer (see Clock); ParseLine leaves it zero.
	Time time.Time `json:"time,omitzero"`
	// Task is the task that was on the CPU ("comm-pid") as the trace prints it. Events
	// raised in softirq context (an arriving segment, a timer) name whatever task was
	// interrupted, often "<idle>-0": it is not the socket's owner.
	Task string `json:"task,omitempty"`
	// Src and Dst are the socket's local and remote ends (for a reset sent: its sender and
	// its destination; for a reset received: the receiving socket's local and remote ends).
	// IPv4-mapped IPv6 addresses are unmapped, so a dual-stack socket and its IPv4 peer
	// name the same 4-tuple.
	Src netip.AddrPort `json:"src"`
	Dst netip.AddrPort `json:"dst"`
}

// StateChange is sock:inet_sock_set_state, or a change seen by sock_diag (Source).
type StateChange struct {
	EventMeta
	Old    State  `json:"old"`
	New    State  `json:"new"`
	Family string `json:"family,omitempty"` // AF_INET or AF_INET6: the socket's family
	Proto  string `json:"proto,omitempty"`  // IPPROTO_TCP (or IPPROTO_MPTCP, IPPROTO_SCTP: not followed)
	Source string `json:"source"`           // SourceTrace or SourceDiag
	// Handoff marks, on the Observer's stream, a tracepoint X -> CLOSE (X FIN_WAIT2 or
	// CLOSING) that the timeline takes for the full socket being replaced by a timewait
	// socket: not a close. sock_diag then confirms it (a StateChange to TIME_WAIT follows,
	// or none when the side stays in timewait FIN_WAIT2) or refutes it (a StateChange to
	// CLOSE follows).
	Handoff bool `json:"handoff,omitempty"`
}

// Retransmit is tcp:tcp_retransmit_skb (a segment retransmitted by a full socket, in
// State), or tcp:tcp_retransmit_synack (SynAck: a SYN-ACK retransmitted by a request
// socket; State is then SYN_RECV).
type Retransmit struct {
	EventMeta
	State  State  `json:"state"`
	SynAck bool   `json:"synack,omitempty"`
	Family string `json:"family"`
	Err    int    `json:"err,omitempty"` // the transmit's error, 0 when it left
}

// ResetSent is tcp:tcp_send_reset. State is UNKNOWN when no socket sent it (Reason
// NO_SOCKET: a segment for a 4-tuple the host has no socket for); a timewait socket
// reports TIME_WAIT.
type ResetSent struct {
	EventMeta
	State  State  `json:"state"`
	Reason string `json:"reason"` // the kernel's sk_rst_reason name: NO_SOCKET, TCP_ABORT_ON_CLOSE, ...
}

// ResetReceived is tcp:tcp_receive_reset: the socket at Src received a valid RST from Dst.
type ResetReceived struct {
	EventMeta
	Family string `json:"family"`
	Cookie uint64 `json:"sock_cookie"` // the receiving socket's cookie (sock_diag's idiag_cookie)
}

// Marker is a line written to the instance's trace_marker (used by Observer.Sync).
type Marker struct {
	Mono time.Duration
	Text string
}

// Lost is trace_pipe's "CPU:N [LOST M EVENTS]": the ring buffer overwrote events before
// they were read.
type Lost struct {
	CPU   int
	Count uint64
}

// Sources of an observation.
const (
	SourceTrace = "trace"     // a tracepoint: exact time (microseconds)
	SourceDiag  = "sock_diag" // a sock_diag poll: time within one poll interval, or from a timer
)

func (StateChange) event()   {}
func (Retransmit) event()    {}
func (ResetSent) event()     {}
func (ResetReceived) event() {}
func (Marker) event()        {}
func (Lost) event()          {}

// MarshalJSON adds "type":"state".
func (e StateChange) MarshalJSON() ([]byte, error) {
	type plain StateChange
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"state", plain(e)})
}

// MarshalJSON adds "type":"retransmit".
func (e Retransmit) MarshalJSON() ([]byte, error) {
	type plain Retransmit
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"retransmit", plain(e)})
}

// MarshalJSON adds "type":"reset_sent".
func (e ResetSent) MarshalJSON() ([]byte, error) {
	type plain ResetSent
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"reset_sent", plain(e)})
}

// MarshalJSON adds "type":"reset_received".
func (e ResetReceived) MarshalJSON() ([]byte, error) {
	type plain ResetReceived
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"reset_received", plain(e)})
}

// MarshalJSON adds "type":"marker".
func (e Marker) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Type string        `json:"type"`
		Mono time.Duration `json:"mono_ns"`
		Text string        `json:"text"`
	}{"marker", e.Mono, e.Text})
}

// MarshalJSON adds "type":"lost".
func (e Lost) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Type  string `json:"type"`
		CPU   int    `json:"cpu"`
		Count uint64 `json:"count"`
	}{"lost", e.CPU, e.Count})
}

// withTime returns e with Time set from its Mono on clock c.
func withTime(e Event, c Clock) Event {
	switch v := e.(type) {
	case StateChange:
		v.Time = c.Time(v.Mono)
		return v
	case Retransmit:
		v.Time = c.Time(v.Mono)
		return v
	case ResetSent:
		v.Time = c.Time(v.Mono)
		return v
	case ResetReceived:
		v.Time = c.Time(v.Mono)
		return v
	}
	return e
}
