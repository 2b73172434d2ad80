package observe

import (
	"net/netip"
	"time"

	"github.com/finproxy/finproxy/eventlog"
)

// Duration is a time.Duration that JSON encodes as its String ("41.207ms").
type Duration time.Duration

// MarshalText encodes d as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses what time.ParseDuration accepts.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Report is what the Observer saw, from Snapshot. It encodes to JSON as is.
type Report struct {
	Start       time.Time    `json:"start"` // when the Observer was created
	Taken       time.Time    `json:"taken"` // when the snapshot was taken
	Sources     Sources      `json:"sources"`
	Warnings    []string     `json:"warnings,omitempty"`
	Stats       Stats        `json:"stats"`
	Connections []Connection `json:"connections"`
	// Summary counts the connections that are not in Connections (nil when there are
	// none): the finished ones forgotten beyond Options.MaxConnections, and those closed
	// for their applications (every full socket gone, a timewait socket possibly still
	// followed) beyond the latest Options.MaxConnections of them.
	Summary *Summary `json:"summary,omitempty"`
}

// DefaultMaxConnections is the number of connections an Observer keeps in detail unless
// Options.MaxConnections says otherwise: at 200 connections a second, the last five
// seconds or so of finished ones.
const DefaultMaxConnections = 1024

// Summary is what the connections left out of a Report's Connections held, in numbers:
// the oldest finished connections are forgotten once there are more than
// Options.MaxConnections, so that memory stays bounded however long the observation
// runs, and a report details at most that many connections closed for their
// applications (a churn leaves tens of thousands in TIME_WAIT), so that it stays bounded
// too.
type Summary struct {
	Connections      uint64 `json:"connections"`
	Retransmits      uint64 `json:"retransmits"`
	ResetsSent       uint64 `json:"resets_sent"`
	ResetsReceived   uint64 `json:"resets_received"`
	TimewaitRestarts uint64 `json:"timewait_restarts"`
	// Notes counts the notes (for finproxy run, the segments and their verdicts) they had.
	Notes uint64 `json:"notes"`
	// States counts, for each state, the sides that entered it.
	States map[State]uint64 `json:"states,omitempty"`
	// Oldest and Newest are when the oldest and the newest of them were first seen.
	Oldest time.Time `json:"oldest"`
	Newest time.Time `json:"newest"`
}

// Sources tells which sources ran.
type Sources struct {
	Trace    bool     `json:"trace"`                // the tracepoints were read
	Instance string   `json:"instance,omitempty"`   // the tracefs instance directory
	Diag     bool     `json:"sock_diag"`            // sock_diag was polled
	NetNS    string   `json:"netns,omitempty"`      // the namespace sock_diag polled, when one
	NetNSs   []string `json:"netns_list,omitempty"` // the namespaces sock_diag polled, when several
	Poll     Duration `json:"poll_interval,omitzero"`
}

// Stats counts what went through the Observer, and what was lost.
type Stats struct {
	TraceLines    uint64 `json:"trace_lines"`
	ParseErrors   uint64 `json:"parse_errors"`   // malformed lines (see Warnings for the first ones)
	UnknownEvents uint64 `json:"unknown_events"` // records of other events
	Filtered      uint64 `json:"filtered"`       // events outside the Filter (addresses are filtered here)
	LostEvents    uint64 `json:"lost_events"`    // events the trace ring buffer overwrote before they were read
	Polls         uint64 `json:"polls"`
	PollErrors    uint64 `json:"poll_errors"`
	// PollNS is the time spent polling (dumps and their application); LongestPollPeriodNS
	// the longest time from one poll's start to the next one's, as it happened
	// (Options.PollInterval unless polls became costly or the machine too loaded to run
	// them on time: what only sock_diag sees is timed no better than that).
	PollNS              uint64 `json:"poll_ns"`
	KickedPolls         uint64 `json:"kicked_polls"` // polls made at once for a handoff to a timewait socket
	LongestPollPeriodNS uint64 `json:"longest_poll_period_ns"`
	StreamDropped       uint64 `json:"stream_dropped"` // events not delivered on Events() because it was full
	Evicted             uint64 `json:"evicted"`        // finished connections forgotten (Options.MaxConnections), counted in Report.Summary
}

// Connection is one incarnation of a 4-tuple: from the handshake (or from when it was
// first seen) to the end of both sides. The client is the side that sent the SYN
// (SYN_SENT); when that was not seen, the side whose port is not a listening port.
type Connection struct {
	// Incarnation counts the connections seen on this 4-tuple, from 1: a new SYN_SENT or
	// SYN_RECV after a side went past its handshake starts a new one.
	Incarnation int       `json:"incarnation"`
	FirstSeen   time.Time `json:"first_seen"`
	Client      Side      `json:"client"`
	Server      Side      `json:"server"`
	Notes       []Note    `json:"notes,omitempty"`
	// NotesDropped counts the notes forgotten beyond 512 (the first 256 and the latest
	// are kept).
	NotesDropped int `json:"notes_dropped,omitempty"`
}

// Side is one end of a connection: one socket (a full socket, then possibly a timewait
// socket) as both sources saw it. A side with no observed events has only Addr.
type Side struct {
	Addr netip.AddrPort `json:"addr"`
	// States are the states the socket entered, in order: for a client from SYN_SENT, for
	// a server from SYN_RECV (the child socket the listener creates when the handshake's
	// last ACK arrives: the tracepoint reports it as LISTEN -> SYN_RECV, immediately
	// followed by SYN_RECV -> ESTABLISHED; the request socket before it is invisible to
	// the tracepoint, sock_diag may show it as SYN_RECV). The timewait phase (FIN_WAIT2,
	// TIME_WAIT) comes from sock_diag. CLOSE appears only when the socket really closed:
	// the full socket died (reset, LAST_ACK acknowledged, abort, no timewait socket
	// available) or the timewait socket expired or was killed.
	States         []StateEntry      `json:"states"`
	Retransmits    []RetransmitEntry `json:"retransmits,omitempty"`
	ResetsSent     []ResetEntry      `json:"resets_sent,omitempty"`
	ResetsReceived []ResetEntry      `json:"resets_received,omitempty"`
	// Timewait describes the timewait socket that replaced the full socket, if one was seen.
	Timewait *Timewait `json:"timewait,omitempty"`
	// HandedToTimewait is true when the tracepoint showed the full socket being replaced
	// by a timewait socket (FIN_WAIT2 -> CLOSE or CLOSING -> CLOSE without a reset) and
	// sock_diag has not (yet, or at all when it is not running) confirmed or refuted it.
	HandedToTimewait bool `json:"handed_to_timewait,omitempty"`
	// Socket is the full socket as the last sock_diag poll that saw it (at SocketSeen)
	// reported it.
	Socket     *Socket   `json:"socket,omitempty"`
	SocketSeen time.Time `json:"socket_seen,omitzero"`
	Owner      *Process  `json:"owner,omitempty"` // the process holding the full socket (by inode)
}

// StateEntry is one state of a side.
type StateEntry struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
	// Dwell is the time until the next state; for the last state (other than CLOSE) the
	// time until the snapshot, with Ongoing set.
	Dwell   Duration `json:"dwell"`
	Ongoing bool     `json:"ongoing,omitempty"`
	// Source is SourceTrace (At exact to the microsecond) or SourceDiag. From sock_diag,
	// TIME_WAIT's At is computed from the timewait timer (exact to a few milliseconds);
	// other states' At is the first poll that showed them (up to one poll interval late;
	// for a socket that existed before the Observer started, when it was first seen).
	Source string `json:"source"`
}

// RetransmitEntry is one retransmission by a side, in the state it happened in.
type RetransmitEntry struct {
	State  State     `json:"state"`
	At     time.Time `json:"at"`
	SynAck bool      `json:"synack,omitempty"`
}

// ResetEntry is one RST sent or received by a side. State and Reason are those of
// tcp_send_reset (empty for resets received).
type ResetEntry struct {
	At     time.Time `json:"at"`
	State  State     `json:"state,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// Timewait is a timewait socket as sock_diag showed it.
type Timewait struct {
	State     State     `json:"state"` // substate at the last sighting: FIN_WAIT2 or TIME_WAIT
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Expires is when its timer fires (the socket then goes away); Remaining is the time
	// from the snapshot to then, 0 once gone.
	Expires   time.Time `json:"expires"`
	Remaining Duration  `json:"remaining"`
	// Restarts are the times the TIME_WAIT timer was restarted (2*MSL again), which the
	// kernel does when it re-acknowledges a retransmitted FIN.
	Restarts []time.Time `json:"restarts,omitempty"`
	Gone     bool        `json:"gone,omitempty"`
}

// Note is an external event put on a connection's timeline with Observer.Annotate, such
// as a segment verdict of the fault engine.
type Note struct {
	At  time.Time      `json:"at"`
	Src netip.AddrPort `json:"src"`
	Dst netip.AddrPort `json:"dst"`
	// Text describes the event. A note with a Record may come without it: the
	// annotator's path (a queued segment's, for finproxy run) does not pay for the
	// formatting, whoever reads the report writes it (finproxy run, when it takes its
	// report).
	Text string `json:"text"`
	// Record is the event log's record of the segment the note is about (finproxy run
	// notes every segment it gave a verdict to), nil for a note of text only.
	Record *eventlog.Record `json:"data,omitempty"`
}

// Leak is a socket held in CLOSE_WAIT longer than a threshold: its peer closed, its
// application has not.
type Leak struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	// Since is when the socket entered CLOSE_WAIT (Source trace), or when it was first
	// seen in CLOSE_WAIT (Source sock_diag: it was already there when observation began).
	Since  time.Time `json:"since"`
	Age    Duration  `json:"age"`
	Source string    `json:"source"`
	Owner  *Process  `json:"owner,omitempty"`
	Inode  uint32    `json:"inode,omitempty"`
	RecvQ  uint32    `json:"recv_q"` // unread bytes, the FIN counting as one while EOF is unread
	SendQ  uint32    `json:"send_q"`
}
