package rules

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/segment"
)

// Side is one endpoint of a tracked connection (see eventlog.Side).
type Side = eventlog.Side

// Sides. The client is the endpoint that sent the SYN.
const (
	AnySide = eventlog.AnySide
	Client  = eventlog.Client
	Server  = eventlog.Server
)

// ParseSide parses "client", "server" or "any".
func ParseSide(v string) (Side, error) { return eventlog.ParseSide(v) }

// Phase is a condition on where a connection stands when a segment is seen. A rule may
// require several phases; all must hold.
type Phase uint16

// Phases. "After a FIN" means the FIN was seen on an earlier segment: a FIN is not after
// itself, but its retransmission is.
const (
	// PhaseHandshake: the three-way handshake has not completed.
	PhaseHandshake Phase = 1 << iota
	// PhaseEstablished: the handshake completed and neither side has sent a FIN.
	PhaseEstablished
	// PhaseAfterClientFIN: the client's FIN was seen before this segment.
	PhaseAfterClientFIN
	// PhaseAfterServerFIN: the server's FIN was seen before this segment.
	PhaseAfterServerFIN
	// PhaseAfterBothFINs: both FINs were seen before this segment.
	PhaseAfterBothFINs
	// PhaseAckOfClientFIN: the segment comes from the server and acknowledges the client's
	// FIN (its ack number is the FIN's sequence number + 1).
	PhaseAckOfClientFIN
	// PhaseAckOfServerFIN: the segment comes from the client and acknowledges the server's FIN.
	PhaseAckOfServerFIN
)

var phaseNames = []struct {
	p    Phase
	name string
}{
	{PhaseHandshake, "handshake"},
	{PhaseEstablished, "established"},
	{PhaseAfterClientFIN, "after-client-fin"},
	{PhaseAfterServerFIN, "after-server-fin"},
	{PhaseAfterBothFINs, "after-both-fins"},
	{PhaseAckOfClientFIN, "ack-of-client-fin"},
	{PhaseAckOfServerFIN, "ack-of-server-fin"},
}

// ParsePhase parses one phase name as written in TOML, such as "ack-of-server-fin".
func ParsePhase(v string) (Phase, error) {
	for _, n := range phaseNames {
		if n.name == v {
			return n.p, nil
		}
	}
	names := make([]string, len(phaseNames))
	for i, n := range phaseNames {
		names[i] = n.name
	}
	return 0, fmt.Errorf("unknown phase %q (want one of %s)", v, strings.Join(names, ", "))
}

func (p Phase) String() string {
	var parts []string
	for _, n := range phaseNames {
		if p&n.p != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, "+")
}

// Event is a condition that releases a held segment. Events are judged from the point of
// view of the held segment's sender ("peer" is the other side).
type Event uint8

// Events.
const (
	EventNone Event = iota
	// EventPeerFIN: the other side's FIN has been seen.
	EventPeerFIN
	// EventOwnFIN: the held segment's sender has sent its FIN.
	EventOwnFIN
	// EventClientFIN: the client's FIN has been seen.
	EventClientFIN
	// EventServerFIN: the server's FIN has been seen.
	EventServerFIN
	// EventBothFINs: both FINs have been seen.
	EventBothFINs
)

var eventNames = map[Event]string{
	EventPeerFIN:   "peer-fin",
	EventOwnFIN:    "own-fin",
	EventClientFIN: "client-fin",
	EventServerFIN: "server-fin",
	EventBothFINs:  "both-fins",
}

func (e Event) String() string {
	if n, ok := eventNames[e]; ok {
		return n
	}
	return "none"
}

// ParseEvent parses an event name such as "peer-fin".
func ParseEvent(v string) (Event, error) {
	for e, n := range eventNames {
		if n == v {
			return e, nil
		}
	}
	return 0, fmt.Errorf("unknown event %q (want peer-fin, own-fin, client-fin, server-fin or both-fins)", v)
}

// Verdict is the fate of a queued segment (see eventlog.Verdict).
type Verdict = eventlog.Verdict

// Verdicts.
const (
	Accept = eventlog.Accept
	Drop   = eventlog.Drop
)

// ParseVerdict parses "pass"/"accept" or "drop".
func ParseVerdict(v string) (Verdict, error) { return eventlog.ParseVerdict(v) }

// Duration is a time.Duration that reads from TOML strings such as "250ms" or "2s", from 0
// to MaxDuration.
type Duration time.Duration

// MaxDuration bounds every duration of a config. It is longer than any timer of a TCP
// teardown (TIME_WAIT and FIN_WAIT2 last 60 s; a sender gives up retransmitting after about
// 15 minutes with the default tcp_retries2), and short enough that no sum or product of
// durations the engine makes overflows (jitter = "2000000h" used to overflow the random
// draw, so that every matching segment's action panicked).
const MaxDuration = time.Hour

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (write it like \"250ms\" or \"2s\")", string(b))
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", string(b))
	}
	if v > MaxDuration {
		return fmt.Errorf("duration %q is longer than %s, the longest a config may give (longer than any TCP timer of a teardown)", string(b), durationText(MaxDuration))
	}
	*d = Duration(v)
	return nil
}

// durationText writes d as time.Duration does, without its zero minutes and seconds
// ("1h", "1h20m", "40m").
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalText renders the duration as time.Duration does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// HookMode says where in the packet path finproxy sits.
type HookMode string

// Hook modes.
const (
	// HookLocal queues this host's own traffic (OUTPUT and INPUT; loopback once).
	HookLocal HookMode = "local"
	// HookForward queues traffic routed through this host (FORWARD).
	HookForward HookMode = "forward"
)

// QueueScope says which segments of a connection must reach the engine.
type QueueScope uint8

// Queue scopes. SYN, FIN and RST segments are always queued.
const (
	// QueueControl: only SYN, FIN and RST segments.
	QueueControl QueueScope = iota
	// QueueFromFIN: every segment of a connection once either side has sent a FIN.
	QueueFromFIN
	// QueueAll: every segment of a connection from its SYN on.
	QueueAll
)

func (q QueueScope) String() string {
	switch q {
	case QueueFromFIN:
		return "from-fin"
	case QueueAll:
		return "all"
	}
	return "control"
}

// Position is a place in a config file, 1-based.
type Position struct {
	File string
	Line int
	Col  int
}

func (p Position) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Target is the scope of the hook: which connections finproxy sees. At least a port or an
// address is required.
type Target struct {
	// Port is the server's TCP port (0: any).
	Port uint16
	// Ports are further server ports (target.port = [a, b, ...]: Port is a, Ports the
	// rest): the connections to any of them are in scope.
	Ports []uint16
	// Addresses are the server's addresses or prefixes (empty: any).
	Addresses []netip.Prefix
	// Hook is where finproxy sits (default local).
	Hook HookMode
	// Queue is the NFQUEUE number (default DefaultQueue).
	Queue uint16
	// Unclassified is the verdict for a queued packet the decoder cannot read as a whole
	// TCP segment (a fragment the kernel did not reassemble, a malformed packet): the
	// rules cannot see it, so it may be one they would act on. Empty: UnclassifiedDrop.
	Unclassified Unclassified
}

// Unclassified is the verdict for packets the rules cannot see.
type Unclassified string

// Verdicts for unclassified packets.
const (
	// UnclassifiedDrop drops them: no segment passes that the rules might have dropped
	// (the default; the kernel reassembles fragments before the hooks, and a receiver
	// drops malformed packets anyway).
	UnclassifiedDrop Unclassified = "drop"
	// UnclassifiedAccept lets them pass unseen.
	UnclassifiedAccept Unclassified = "accept"
)

// DefaultQueue is the NFQUEUE number used when a config names none.
const DefaultQueue = 7400

// Match is the part of a rule that selects segments. Zero values match everything.
type Match struct {
	// Side is the sender of the segment.
	Side Side
	// ServerPort, when not 0, must be the connection's server port (of the target's ports).
	ServerPort uint16
	// ServerAddr, when valid, must be the connection's server address (of the target's).
	ServerAddr netip.Addr
	// Flags, when FlagsSet, must equal the segment's SYN, FIN, RST, PSH, ACK and URG bits exactly.
	Flags    segment.Flags
	FlagsSet bool
	// PureACK requires an ACK with no SYN, FIN, RST and no payload.
	PureACK bool
	// HasFlags must all be set in the segment (others may be set too).
	HasFlags segment.Flags
	// Payload: 0 any, +1 must carry data, -1 must carry none.
	Payload int
	// Phases must all hold.
	Phases Phase
	// Nth selects the nth segment on a connection that satisfies everything above (1-based; 0: every one).
	Nth int
	// Probability of applying the rule to a matching segment, from the config's seed (0: 1).
	Probability float64
	// Limit caps how often the rule acts per connection (0: no cap); GlobalLimit over the whole run.
	Limit       int
	GlobalLimit int
}

// Rule is one compiled rule of a config.
type Rule struct {
	Name       string
	Match      Match
	ActionName string
	Action     Action
	// Pos is where the rule's table starts in its file.
	Pos Position
}

// Config is what the engine runs: the scope and the rules of a scenario (the config
// package loads it from a file, with the sections about labs and expectations).
type Config struct {
	// File is the path the config was loaded from ("" for an in-memory one).
	File        string
	Name        string
	Description string
	// Seed makes probabilistic rules reproducible.
	Seed   int64
	Target Target
	Rules  []*Rule
}

// MarshalText renders the event as in the TOML files ("peer-fin", ...).
func (e Event) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// UnmarshalText parses an event name such as "peer-fin".
func (e *Event) UnmarshalText(b []byte) error {
	v, err := ParseEvent(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}
