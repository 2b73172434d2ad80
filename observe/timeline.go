package observe

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/finproxy/finproxy/eventlog"
)

// twLen is TCP_TIMEWAIT_LEN, the kernel's fixed TIME_WAIT duration (2*MSL): a timewait
// socket in TIME_WAIT has its timer set to it on entry and on every restart.
const twLen = 60 * time.Second

// maxJiffy is the timer granularity assumed until the one of this kernel is known: timers
// run in jiffies (4 ms at HZ=250, 10 ms at HZ=100) and sock_diag reports their expiry in
// milliseconds, multiples of a jiffy; the greatest common divisor of the expiries seen
// gives the jiffy.
const maxJiffy = 10 * time.Millisecond

type role int

const (
	client role = 0
	server role = 1
)

// pair is a connection's key: client and server ends, IPv4-mapped addresses unmapped.
type pair struct{ client, server netip.AddrPort }

// ends is one socket's view of a 4-tuple.
type ends struct{ local, remote netip.AddrPort }

// stateRec is one state of a side: 16 bytes (a side has several, and every connection
// two sides).
type stateRec struct {
	at    time.Duration
	state State
	diag  bool // from sock_diag (SourceDiag), else from the tracepoint (SourceTrace)
}

func (e stateRec) src() string {
	if e.diag {
		return SourceDiag
	}
	return SourceTrace
}

type retransRec struct {
	state  State
	at     time.Duration
	synack bool
}

type resetRec struct {
	at     time.Duration
	state  State
	reason string
}

// handoff records the tracepoint's X -> CLOSE that replaces a full socket by a timewait
// socket (X is FIN_WAIT2 or CLOSING), until sock_diag confirms or refutes it.
type handoff struct {
	at   time.Duration
	from State
}

type twRec struct {
	state     State
	first     time.Duration // time of the first sighting
	last      time.Duration // time of the last sighting
	lastStart time.Duration // start of the dump of the last sighting
	// The timer fires in [dlo, dhi]: the intersection of what each sighting since the
	// timer was last set allows.
	dlo, dhi time.Duration
	restarts []time.Duration
	gone     bool
	// When the timer was last set is known only from the timer: the entry (TIME_WAIT's
	// state entry, or the last restart) is refined as sightings narrow [dlo, dhi]. It
	// happened in [floor, ceil]; handoff, if set, is the tracepoint time it would be if
	// the timewait socket was born in TIME_WAIT.
	refine      refineTarget
	floor, ceil time.Duration
	handoff     time.Duration
}

type refineTarget int

const (
	refineNone refineTarget = iota
	refineState
	refineRestart
)

func (t *twRec) deadline() time.Duration { return t.dlo + (t.dhi-t.dlo)/2 }

// sideEvents are a side's retransmissions and resets: most sides have none, so they are
// kept apart (a side is 168 bytes without them, 256 with).
type sideEvents struct {
	retrans   []retransRec
	sent      []resetRec
	recv      []resetRec
	lastReset time.Duration
	hasReset  bool
}

// noEvents is the sideEvents of a side that has none, never written.
var noEvents sideEvents

// events returns the side's events to read.
func (s *side) events() *sideEvents {
	if s.ev == nil {
		return &noEvents
	}
	return s.ev
}

// addEvents returns the side's events to add to.
func (s *side) addEvents() *sideEvents {
	if s.ev == nil {
		s.ev = new(sideEvents)
	}
	return s.ev
}

type side struct {
	addr      netip.AddrPort
	states    []stateRec
	ev        *sideEvents // retransmissions and resets, nil until one
	handoff   *handoff
	tw        *twRec
	sock      sockRec // the full socket as the last poll that saw it (at sockSeen) gave it
	sockSeen  time.Duration
	owner     *Process
	diagSeen  int
	diagFirst time.Duration
}

// noteRec is a note as Annotate takes it.
// sockRec is a Socket kept by a side (every side sock_diag sees has one): its addresses
// are the side's and its peer's, so they are not kept; in 56 bytes beside the side, no
// 128-byte Socket of its own.
type sockRec struct {
	family            string
	expires           time.Duration
	cookie            uint64
	recvQ, sendQ, uid uint32
	inode             uint32
	state             State
	timer             TimerKind
	retrans           uint8
	known             bool // a poll saw the full socket
}

func makeSockRec(k *Socket) sockRec {
	return sockRec{family: k.Family, expires: k.Expires, cookie: k.Cookie, recvQ: k.RecvQ, sendQ: k.SendQ,
		uid: k.UID, inode: k.Inode, state: k.State, timer: k.Timer, retrans: k.Retrans, known: true}
}

func (k *sockRec) socket(local, remote netip.AddrPort) Socket {
	return Socket{Family: k.family, Local: local, Remote: remote, State: k.state, Timer: k.timer, Expires: k.expires,
		Retrans: k.retrans, RecvQ: k.recvQ, SendQ: k.sendQ, UID: k.uid, Inode: k.inode, Cookie: k.cookie}
}

type noteRec struct {
	at       time.Duration
	src, dst netip.AddrPort
	text     string
	rec      *eventlog.Record
}

// keptNote is a note as a connection keeps it. finproxy run notes every segment it
// queues, so that with the handshake queued every connection keeps two or more: a
// segment's record is kept in seg, without what the connection already knows (the
// 4-tuple) and with its rule and action as indexes into the timeline's names, in 72
// bytes and no pointer where a noteRec with its record took 96 and 208 more. A text, or
// a record seg cannot hold exactly (an address that is not the connection's as the
// note gives it, a packet as it left, a value out of range), is kept in extra as it
// came.
type keptNote struct {
	at    time.Duration
	extra *noteExtra
	seg   segNote
}

type noteExtra struct {
	text string
	rec  *eventlog.Record
}

// segNote is an eventlog.Record without Client, Server (the connection's addresses,
// oriented by Side) and Out (always empty here).
type segNote struct {
	time, verdictTime, held int64
	seq, ack, id            uint32
	length, incarnation     int32
	rule, action            uint16 // indexes into timeline.names
	side                    eventlog.Side
	flags                   uint8 // the record's Flags (observe does not import segment)
	verdict                 eventlog.Verdict
	bits                    uint8
}

const (
	noteFromClient uint8 = 1 << iota // the note's src is the connection's client
	noteSeg                          // seg holds the note's record
	noteModified
	noteInjected
)

// maxNames bounds the rule and action names a timeline numbers: a record naming one
// beyond them is kept whole.
const maxNames = 1 << 16

// maxNotes bounds the notes kept per connection: beyond it the notes after the first
// half are forgotten oldest first, so that a long connection keeps its beginning (the
// handshake) and its latest notes (the teardown).
const maxNotes = 512

type conn struct {
	key         pair
	incarnation int
	first       time.Duration
	sides       [2]*side
	notes       []keptNote
	notesLost   int
}

type pendingSyn struct {
	at   time.Duration
	addr netip.Addr
}

// twSight is a timewait socket seen by a poll's dump, made within [lo, hi]: its
// substate and the time left on its timer.
type twSight struct {
	state   State
	expires time.Duration
	lo, hi  time.Duration
}

func (g twSight) at() time.Duration { return g.lo + (g.hi-g.lo)/2 }

// poll identifies one sock_diag poll.
type poll struct {
	start, at time.Duration
}

// timeline assembles events from both sources into connections. It is a pure state
// machine driven by apply (tracepoint events) and applyPoll (sock_diag results), so that
// recorded sequences can drive it in tests. Not safe for concurrent use.
type timeline struct {
	filter   Filter
	trace    bool // the tracepoint source runs: it is authoritative for full sockets
	maxConns int

	conns   []*conn
	current map[pair]*conn
	// retired counts the connections of a 4-tuple whose current connection was taken
	// off it without being forgotten (its roles turned out reversed); otherwise the
	// current connection's incarnation is the count.
	retired     map[pair]int
	pendingSyn  map[netip.AddrPort][]pendingSyn
	listenPorts map[uint16]bool
	tw          map[ends]twSight // timewait sockets of the last poll
	pendingTW   map[*side]*conn  // handoffs awaiting sock_diag
	// seenLocal are the local addresses of the sockets sock_diag listed: the addresses of
	// the namespaces it polls. Only for those can it tell that a socket is gone; a side
	// whose address it never saw lives in a namespace it does not poll.
	seenLocal map[netip.Addr]bool
	twSides   map[*side]*conn // sides whose timewait socket is followed
	fullSides map[*side]*conn // sides whose full socket the last poll saw
	lastOwner *Process        // the owner setOwner recorded last
	fullBuf   []int32         // applyPoll's list of full sockets, used again
	out       []Event         // derived events, drained by the Observer
	polled    bool            // a poll was applied
	lastPoll  poll
	filtered  uint64
	evicted   uint64
	expGCD    time.Duration // GCD of the timer expiries seen, in whole milliseconds
	// evictAt is the number of connections at which create evicts finished ones: maxConns
	// and an eighth; when live connections alone are beyond it, a quarter more than there
	// are (a churn's tens of thousands of TIME_WAIT connections are live for a minute:
	// scanning them all every maxConns/8 new ones took 9% of finproxy's CPU in the
	// benchmark), so that each connection costs a bounded number of scans.
	evictAt int
	scanned uint64  // connections evict looked at, in all
	summary summary // what the evicted connections held
	// names are the rule and action names of the kept notes' records, numbered from 1
	// (0 is ""); nameIdx finds their numbers.
	names   []string
	nameIdx map[string]uint16
}

// summary accumulates the evicted connections, times on the monotonic clock.
type summary struct {
	conns, retrans, resetsSent, resetsRecv, restarts, notes uint64
	states                                                  map[State]uint64
	oldest, newest                                          time.Duration
}

func (s *summary) add(c *conn) {
	first := c.firstSeen()
	if s.conns == 0 || first < s.oldest {
		s.oldest = first
	}
	if s.conns == 0 || first > s.newest {
		s.newest = first
	}
	s.conns++
	s.notes += uint64(len(c.notes) + c.notesLost)
	for _, sd := range c.sides {
		ev := sd.events()
		s.retrans += uint64(len(ev.retrans))
		s.resetsSent += uint64(len(ev.sent))
		s.resetsRecv += uint64(len(ev.recv))
		if sd.tw != nil {
			s.restarts += uint64(len(sd.tw.restarts))
		}
		for _, e := range sd.states {
			if s.states == nil {
				s.states = map[State]uint64{}
			}
			s.states[e.state]++
		}
	}
}

func (s *summary) report(clk Clock) *Summary {
	if s.conns == 0 {
		return nil
	}
	return &Summary{Connections: s.conns, Retransmits: s.retrans, ResetsSent: s.resetsSent,
		ResetsReceived: s.resetsRecv, TimewaitRestarts: s.restarts, Notes: s.notes,
		States: maps.Clone(s.states), Oldest: clk.Time(s.oldest), Newest: clk.Time(s.newest)}
}

func newTimeline(f Filter, trace bool, maxConns int) *timeline {
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	return &timeline{
		filter:      f,
		trace:       trace,
		maxConns:    maxConns,
		evictAt:     maxConns + maxConns/8,
		current:     map[pair]*conn{},
		retired:     map[pair]int{},
		pendingSyn:  map[netip.AddrPort][]pendingSyn{},
		listenPorts: map[uint16]bool{},
		tw:          map[ends]twSight{},
		pendingTW:   map[*side]*conn{},
		seenLocal:   map[netip.Addr]bool{},
		twSides:     map[*side]*conn{},
		fullSides:   map[*side]*conn{},
		names:       []string{""},
		nameIdx:     map[string]uint16{"": 0},
	}
}

func (s *side) last() State {
	if len(s.states) == 0 {
		return Unknown
	}
	return s.states[len(s.states)-1].state
}

// started reports whether the side went past its handshake (a new SYN on its 4-tuple is
// then a new incarnation).
func (s *side) started() bool {
	for _, e := range s.states {
		if e.state != SynSent && e.state != SynRecv {
			return true
		}
	}
	return false
}

// ended reports whether the full socket of this side is gone (closed or replaced by a
// timewait socket).
func (s *side) ended() bool {
	return s.last() == Close || s.handoff != nil || s.tw != nil
}

func (s *side) resetSinceLastState() bool {
	ev := s.events()
	if !ev.hasReset {
		return false
	}
	return len(s.states) == 0 || ev.lastReset >= s.states[len(s.states)-1].at
}

// add records that the side entered st at at. Entries stay in time order; a state equal
// to its predecessor is not repeated (the earlier time wins). It reports whether an entry
// was added and the state before it.
func (s *side) add(st State, at time.Duration, src string) (bool, State) {
	i := len(s.states)
	for i > 0 && s.states[i-1].at > at {
		i--
	}
	prev := Unknown
	if i > 0 {
		prev = s.states[i-1].state
	}
	if prev == st && i > 0 {
		return false, prev
	}
	if i < len(s.states) && s.states[i].state == st {
		s.states[i].at, s.states[i].diag = at, src == SourceDiag
		return false, prev
	}
	s.states = slices.Insert(s.states, i, stateRec{state: st, at: at, diag: src == SourceDiag})
	return true, prev
}

func (c *conn) peer(r role) netip.AddrPort { return c.sides[1-r].addr }

// firstSeen is the earliest time known of the connection.
func (c *conn) firstSeen() time.Duration {
	t := c.first
	for _, s := range c.sides {
		if len(s.states) > 0 {
			t = min(t, s.states[0].at)
		}
		ev := s.events()
		for _, e := range ev.retrans {
			t = min(t, e.at)
		}
		for _, e := range ev.sent {
			t = min(t, e.at)
		}
		for _, e := range ev.recv {
			t = min(t, e.at)
		}
	}
	return t
}

// find returns the current connection of a 4-tuple and the role of local in it.
func (tl *timeline) find(local, remote netip.AddrPort) (*conn, role, bool) {
	if c, ok := tl.current[pair{local, remote}]; ok {
		return c, client, true
	}
	if c, ok := tl.current[pair{remote, local}]; ok {
		return c, server, true
	}
	return nil, 0, false
}

// infer guesses local's role when no event says it: the end on a listening port (seen
// as a listener by either source) is the server, then the end whose port the Filter
// names, then the lower port.
func (tl *timeline) infer(local, remote netip.AddrPort) role {
	switch {
	case tl.listenPorts[local.Port()] && !tl.listenPorts[remote.Port()]:
		return server
	case tl.listenPorts[remote.Port()] && !tl.listenPorts[local.Port()]:
		return client
	}
	lp, rp := slices.Contains(tl.filter.Ports, local.Port()), slices.Contains(tl.filter.Ports, remote.Port())
	switch {
	case lp && !rp:
		return server
	case rp && !lp:
		return client
	case local.Port() < remote.Port():
		return server
	}
	return client
}

// lookup returns the connection an event of local's socket belongs to, creating it (or a
// new incarnation) as needed. hint is local's role when the event tells it (-1 if not);
// fresh is set by events that start a connection.
func (tl *timeline) lookup(local, remote netip.AddrPort, hint role, fresh bool, at time.Duration) (*conn, role) {
	if c, r, ok := tl.find(local, remote); ok {
		if hint >= 0 && hint != r {
			if !c.sides[0].started() && !c.sides[1].started() {
				// Roles were guessed wrong (sock_diag saw it first): swap them.
				tl.retire(c)
				c.key = pair{c.key.server, c.key.client}
				c.sides[0], c.sides[1] = c.sides[1], c.sides[0]
				for i := range c.notes {
					c.notes[i].seg.bits ^= noteFromClient
				}
				tl.current[c.key] = c
				return c, hint
			}
			// The 4-tuple is used again with the roles reversed.
			tl.retire(c)
			return tl.create(local, remote, hint, at), hint
		}
		if fresh && c.sides[r].started() {
			return tl.create(local, remote, r, at), r
		}
		return c, r
	}
	r := hint
	if r < 0 {
		r = tl.infer(local, remote)
	}
	return tl.create(local, remote, r, at), r
}

// retire takes the current connection c off its 4-tuple, keeping its count.
func (tl *timeline) retire(c *conn) {
	delete(tl.current, c.key)
	tl.retired[c.key] = c.incarnation
}

func (tl *timeline) create(local, remote netip.AddrPort, r role, at time.Duration) *conn {
	key := pair{local, remote}
	if r == server {
		key = pair{remote, local}
	}
	if len(tl.conns) >= tl.evictAt {
		tl.evict()
		tl.evictAt = tl.maxConns + tl.maxConns/8
		if n := len(tl.conns); n > tl.maxConns {
			tl.evictAt = n + max(tl.maxConns/8, n/4)
		}
	}
	n := tl.retired[key]
	if cur, ok := tl.current[key]; ok {
		n = cur.incarnation
	} else if n > 0 {
		delete(tl.retired, key)
	}
	c := &conn{key: key, incarnation: n + 1, first: at,
		sides: [2]*side{{addr: key.client}, {addr: key.server}}}
	tl.conns = append(tl.conns, c)
	tl.current[key] = c
	return c
}

// evict forgets the oldest finished connections down to maxConns, counting what they
// held in the summary.
func (tl *timeline) evict() {
	excess := len(tl.conns) - tl.maxConns
	tl.scanned += uint64(len(tl.conns))
	kept := tl.conns[:0]
	for _, c := range tl.conns {
		if excess > 0 && tl.finished(c) {
			excess--
			tl.evicted++
			tl.summary.add(c)
			for _, sd := range c.sides {
				// Handoffs sock_diag never resolved (it does not run) and the last
				// poll's sides must not hold the connection.
				delete(tl.pendingTW, sd)
				delete(tl.fullSides, sd)
			}
			if tl.current[c.key] == c {
				delete(tl.current, c.key)
			}
			continue
		}
		kept = append(kept, c)
	}
	clear(tl.conns[len(kept):])
	tl.conns = kept
}

func (tl *timeline) finished(c *conn) bool {
	for _, s := range c.sides {
		if s.handoff != nil {
			// Handed to a timewait socket: finished once sock_diag has given up on seeing
			// it (a namespace it does not poll), or when it does not run.
			if tl.pendingTW[s] != nil && tl.polled {
				return false
			}
			continue
		}
		if len(s.states) > 0 && s.last() != Close {
			return false
		}
		if s.tw != nil && !s.tw.gone {
			return false
		}
	}
	return true
}

func (tl *timeline) emit(c *conn, r role, prev, st State, at time.Duration, src string) {
	tl.out = append(tl.out, StateChange{
		EventMeta: EventMeta{Mono: at, Src: c.sides[r].addr, Dst: c.peer(r)},
		Old:       prev, New: st, Source: src,
	})
}

// addDerived adds a state that is not a tracepoint event as is and emits it.
func (tl *timeline) addDerived(c *conn, r role, st State, at time.Duration, src string) {
	if added, prev := c.sides[r].add(st, at, src); added {
		tl.emit(c, r, prev, st, at, src)
	}
}

// apply takes one tracepoint event. It reports false when the Filter excludes it.
func (tl *timeline) apply(ev Event) bool {
	_, ok := tl.applyEvent(ev)
	return ok
}

// applyEvent is apply, returning the event as the stream gives it: a StateChange the
// timeline takes for a handoff to a timewait socket is marked so.
func (tl *timeline) applyEvent(ev Event) (Event, bool) {
	switch e := ev.(type) {
	case StateChange:
		if !tl.filter.Match(e.Src, e.Dst) {
			tl.filtered++
			return ev, false
		}
		if tl.applyState(e) {
			e.Handoff = true
			ev = e
		}
	case Retransmit:
		if !tl.filter.Match(e.Src, e.Dst) {
			tl.filtered++
			return ev, false
		}
		hint := role(-1)
		if e.SynAck {
			hint = server
		} else if e.State == SynSent {
			hint = client
		}
		// A SYN or SYN-ACK retransmitted on the 4-tuple of a finished connection belongs
		// to a new one.
		c, r := tl.lookup(e.Src, e.Dst, hint, hint >= 0, e.Mono)
		s := c.sides[r]
		ev := s.addEvents()
		ev.retrans = append(ev.retrans, retransRec{state: e.State, at: e.Mono, synack: e.SynAck})
	case ResetSent:
		if !tl.filter.Match(e.Src, e.Dst) {
			tl.filtered++
			return ev, false
		}
		c, r := tl.lookup(e.Src, e.Dst, -1, false, e.Mono)
		s := c.sides[r]
		ev := s.addEvents()
		ev.sent = append(ev.sent, resetRec{at: e.Mono, state: e.State, reason: e.Reason})
		ev.lastReset, ev.hasReset = e.Mono, true
		if s.handoff != nil && s.tw == nil && e.State == Close {
			// The full socket was aborted in FIN_WAIT2/CLOSING, not handed over.
			tl.resolveClosed(c, r)
		}
	case ResetReceived:
		if !tl.filter.Match(e.Src, e.Dst) {
			tl.filtered++
			return ev, false
		}
		c, r := tl.lookup(e.Src, e.Dst, -1, false, e.Mono)
		s := c.sides[r]
		ev := s.addEvents()
		ev.recv = append(ev.recv, resetRec{at: e.Mono})
		ev.lastReset, ev.hasReset = e.Mono, true
	default:
		return ev, false
	}
	return ev, true
}

// applyState applies a state change; it reports whether it was taken for a handoff.
func (tl *timeline) applyState(e StateChange) bool {
	if e.Proto != "" && e.Proto != "IPPROTO_TCP" {
		return false
	}
	if e.Dst.Port() == 0 {
		// A listener (or an unconnected socket).
		switch {
		case e.New == Listen:
			tl.listenPorts[e.Src.Port()] = true
		case e.Old == Listen:
			delete(tl.listenPorts, e.Src.Port())
		}
		return false
	}
	if e.Src.Port() == 0 {
		// connect() sets SYN_SENT before it chooses the source port: keep the entry until
		// the socket's next change names its 4-tuple.
		switch {
		case e.New == SynSent:
			q := tl.pendingSyn[e.Dst]
			// Forget entries whose socket never said more (filtered, or lost events).
			for len(q) > 0 && (len(q) >= 1024 || e.Mono-q[0].at > 5*time.Minute) {
				q = q[1:]
			}
			tl.pendingSyn[e.Dst] = append(q, pendingSyn{at: e.Mono, addr: e.Src.Addr()})
		case e.Old == SynSent:
			tl.popPending(e.Dst, e.Src.Addr(), e.Mono)
		}
		return false
	}
	hint := role(-1)
	switch {
	case e.New == SynSent || e.Old == SynSent:
		hint = client
	case e.Old == Listen && e.New == SynRecv:
		hint = server
	}
	fresh := hint >= 0
	c, r := tl.lookup(e.Src, e.Dst, hint, fresh, e.Mono)
	s := c.sides[r]
	if r == client && e.Old == SynSent && len(s.states) == 0 {
		if at, ok := tl.popPending(e.Dst, e.Src.Addr(), e.Mono); ok {
			s.add(SynSent, at, SourceTrace)
		}
	}
	if e.New == Close && (e.Old == FinWait2 || e.Old == Closing) && !s.resetSinceLastState() {
		s.handoff = &handoff{at: e.Mono, from: e.Old}
		tl.pendingTW[s] = c
		if sight, ok := tl.tw[ends{s.addr, c.peer(r)}]; ok && sight.lo > e.Mono {
			tl.twApply(c, r, sight)
		}
		return true
	}
	s.add(e.New, e.Mono, SourceTrace)
	return false
}

// popPending takes the oldest SYN_SENT recorded for dst from addr (or an unspecified
// address) at or before at.
func (tl *timeline) popPending(dst netip.AddrPort, addr netip.Addr, at time.Duration) (time.Duration, bool) {
	q := tl.pendingSyn[dst]
	for i, p := range q {
		if p.at <= at && (p.addr == addr || !p.addr.IsValid() || p.addr.IsUnspecified() || addr.IsUnspecified()) {
			q = slices.Delete(q, i, i+1)
			if len(q) == 0 {
				delete(tl.pendingSyn, dst)
			} else {
				tl.pendingSyn[dst] = q
			}
			return p.at, true
		}
	}
	return 0, false
}

// resolveClosed ends a pending handoff as a real close at its time.
func (tl *timeline) resolveClosed(c *conn, r role) {
	s := c.sides[r]
	at := s.handoff.at
	s.handoff = nil
	delete(tl.pendingTW, s)
	tl.addDerived(c, r, Close, at, SourceTrace)
}

// resetAfterHandoff returns when the peer of side r first sent a reset toward it after
// r's pending handoff and before before.
func resetAfterHandoff(c *conn, r role, before time.Duration) (time.Duration, bool) {
	h, peer := c.sides[r].handoff, c.sides[1-r]
	if peer.ev == nil {
		return 0, false
	}
	for _, rs := range peer.ev.sent {
		if rs.at > h.at && rs.at < before {
			return rs.at, true
		}
	}
	return 0, false
}

// resolveKilled ends a pending handoff as a timewait socket that a reset ended at rst: in
// TIME_WAIT from the handoff if the peer had sent its FIN by then (or the socket came
// from CLOSING), in the timewait FIN_WAIT2 otherwise.
func (tl *timeline) resolveKilled(c *conn, r role, rst time.Duration) {
	s := c.sides[r]
	h := s.handoff
	s.handoff = nil
	delete(tl.pendingTW, s)
	st := FinWait2
	if h.from == Closing || sentFIN(c.sides[1-r], h.at) {
		st = TimeWait
	}
	tl.addDerived(c, r, st, h.at, SourceTrace)
	tl.addDerived(c, r, Close, rst, SourceTrace)
}

// sentFIN reports whether side s had sent its FIN by time at (it was in a state that
// follows sending one).
func sentFIN(s *side, at time.Duration) bool {
	for _, e := range s.states {
		if e.at > at {
			break
		}
		switch e.state {
		case FinWait1, FinWait2, Closing, LastAck, TimeWait:
			return true
		}
	}
	return false
}

// jiffy is the timer granularity: learnt from the expiries, maxJiffy until then.
func (tl *timeline) jiffy() time.Duration {
	if tl.expGCD > 0 && tl.expGCD < maxJiffy {
		return tl.expGCD
	}
	return maxJiffy
}

func (tl *timeline) learnJiffy(exp time.Duration) {
	ms := exp.Truncate(time.Millisecond)
	if ms <= 0 {
		return
	}
	a, b := tl.expGCD, ms
	for b != 0 {
		a, b = b, a%b
	}
	tl.expGCD = a
}

// twApply follows the timewait socket of side r from a sighting.
//
// Times come from its timer: a timewait socket's timer is set to twLen when it enters
// TIME_WAIT (and again when it re-acknowledges a retransmitted FIN). A dump made within
// [lo, hi] that reports e ms left (whole jiffies) puts the deadline within
// [lo+e-jiffy, hi+e+jiffy]; the sightings of one setting of the timer narrow it.
func (tl *timeline) twApply(c *conn, r role, g twSight) {
	s := c.sides[r]
	jf := tl.jiffy()
	dlo, dhi := g.lo+g.expires-jf, g.hi+g.expires+jf
	if s.tw == nil {
		t := &twRec{state: g.state, first: g.at(), last: g.at(), lastStart: g.lo, dlo: dlo, dhi: dhi}
		s.tw = t
		h := s.handoff
		s.handoff = nil
		delete(tl.pendingTW, s)
		tl.twSides[s] = c
		switch g.state {
		case FinWait2:
			at, src := g.at(), SourceDiag
			if h != nil {
				at, src = h.at, SourceTrace // the full socket's FIN_WAIT2 goes on
			}
			tl.addDerived(c, r, FinWait2, at, src)
		case TimeWait:
			if h != nil && h.from == Closing {
				// CLOSING -> TIME_WAIT: born in TIME_WAIT at the tracepoint's time.
				tl.addDerived(c, r, TimeWait, h.at, SourceTrace)
				break
			}
			t.refine, t.floor, t.ceil = refineState, 0, g.hi
			if n := len(s.states); n > 0 {
				t.floor = s.states[n-1].at
			}
			if h != nil {
				// FIN_WAIT2 -> CLOSE: born in TIME_WAIT (the peer's FIN arrived) or in
				// FIN_WAIT2 (an orphan whose FIN was acknowledged) and moved to TIME_WAIT
				// when the peer's FIN came; the timer tells which.
				t.floor, t.handoff = h.at, h.at
			}
			added, prev := s.add(TimeWait, t.estimate(), SourceDiag)
			t.refineEntry(s)
			if e := s.states[len(s.states)-1]; added {
				tl.emit(c, r, prev, TimeWait, e.at, e.src())
			}
		}
		return
	}
	t := s.tw
	switch {
	case g.state != t.state:
		t.state, t.dlo, t.dhi, t.refine = g.state, dlo, dhi, refineNone
		if g.state == TimeWait {
			// Timewait FIN_WAIT2 -> TIME_WAIT: the peer's FIN arrived.
			t.refine, t.floor, t.ceil, t.handoff = refineState, t.last, g.hi, 0
			at := t.estimate()
			tl.addDerived(c, r, TimeWait, at, SourceDiag)
		}
	case g.state == TimeWait && dlo > t.dhi && dhi-twLen >= t.lastStart:
		// The deadline moved later: the timer was set again, after the previous sighting.
		t.dlo, t.dhi = dlo, dhi
		t.refine, t.floor, t.ceil, t.handoff = refineRestart, t.last, g.hi, 0
		t.restarts = append(t.restarts, t.estimate())
	case g.state == TimeWait && dlo > t.dhi:
		// A later deadline that no setting since the previous sighting gives: the time
		// left read long in this dump (seen under CI load; likely the kernel's jiffies
		// behind the clock, a loaded VM's tick being late). Not a restart; what is known
		// stays.
	case dlo > t.dhi || dhi < t.dlo:
		t.dlo, t.dhi = dlo, dhi // inconsistent (a FIN_WAIT2 timer reset): start over
	default:
		t.dlo, t.dhi = max(t.dlo, dlo), min(t.dhi, dhi)
	}
	t.last, t.lastStart = g.at(), g.lo
	t.refineEntry(s)
}

// estimate is when the timer was set: the middle of what [dlo, dhi] allows within
// [floor, ceil].
func (t *twRec) estimate() time.Duration {
	lo, hi := max(t.dlo-twLen, t.floor), min(t.dhi-twLen, t.ceil)
	if lo > hi {
		return min(max(t.deadline()-twLen, t.floor), t.ceil)
	}
	return lo + (hi-lo)/2
}

// refineEntry updates the entry whose time the timer gives.
func (t *twRec) refineEntry(s *side) {
	switch t.refine {
	case refineState:
		n := len(s.states)
		if n == 0 || s.states[n-1].state != TimeWait {
			return
		}
		e := &s.states[n-1]
		if t.handoff != 0 && t.handoff >= t.dlo-twLen && t.handoff <= t.dhi-twLen {
			e.at, e.diag = t.handoff, false
		} else {
			e.at, e.diag = t.estimate(), true
		}
	case refineRestart:
		t.restarts[len(t.restarts)-1] = t.estimate()
	}
}

// applyPoll takes the sockets of one sock_diag poll. It returns the inodes of full
// sockets whose owner is not known yet.
func (tl *timeline) applyPoll(p poll, socks []timedSocket) (needOwner []uint32) {
	tw := make(map[ends]twSight, len(tl.tw)) // sized as the last poll: no growth on the way
	full := tl.fullBuf[:0]                   // used again (see Observer.pollBuf)
	for i := range socks {
		s := &socks[i]
		if !tl.filter.Match(s.Local, s.Remote) {
			continue
		}
		if len(tl.seenLocal) < 1<<12 {
			tl.seenLocal[s.Local.Addr()] = true
		}
		if s.Timer != TimerOff {
			tl.learnJiffy(s.Expires)
		}
		switch {
		case s.State == Listen:
			tl.listenPorts[s.Local.Port()] = true
		case s.Remote.Port() == 0:
		case s.Timewait():
			tw[ends{s.Local, s.Remote}] = twSight{state: s.State, expires: s.Expires, lo: s.lo, hi: s.hi}
		default:
			full = append(full, int32(i))
		}
	}
	tl.tw = tw
	tl.fullBuf = shrink(full)

	// Timewait sockets: first those already followed (an older incarnation may still
	// have its timewait socket while a new one has started), then the others.
	followed := make(map[ends]*conn, len(tl.twSides))
	for s, c := range tl.twSides {
		followed[ends{s.addr, c.peer(sideRole(c, s))}] = c
	}
	for k, g := range tw {
		c, ok := followed[k]
		var r role
		if ok {
			r = client
			if c.sides[server].addr == k.local {
				r = server
			}
		} else if c, r, ok = tl.find(k.local, k.remote); !ok {
			c, r = tl.lookup(k.local, k.remote, -1, false, g.hi)
		}
		s := c.sides[r]
		switch {
		case s.tw != nil && !s.tw.gone:
			tl.twApply(c, r, g)
		case s.tw != nil:
			// Seen again after it was found gone: a poll missed it. Take it back.
			s.tw.gone = false
			tl.twSides[s] = c
			if n := len(s.states); n > 0 && s.states[n-1].state == Close && s.states[n-1].diag {
				s.states = s.states[:n-1]
			}
			tl.twApply(c, r, g)
		case s.handoff != nil:
			if g.lo > s.handoff.at {
				tl.twApply(c, r, g)
			}
		case !tl.trace || (len(s.states) == 0 && tl.seenAgain(s, g.hi)):
			// Without the tracepoint, or for a connection older than the Observer.
			tl.twApply(c, r, g)
		}
	}

	// Full sockets.
	seen := make(map[*side]*conn, len(tl.fullSides))
	for _, i := range full {
		ts := &socks[i]
		sk := &ts.Socket
		c, r, ok := tl.find(sk.Local, sk.Remote)
		if !ok || (!tl.trace && c.sides[r].ended()) {
			hint := role(-1)
			switch {
			case sk.State == SynSent:
				hint = client
			case sk.State == SynRecv && sk.Inode == 0:
				hint = server // a request socket
			}
			c, r = tl.lookup(sk.Local, sk.Remote, hint, ok, ts.hi)
		}
		s := c.sides[r]
		if tl.trace && s.ended() {
			// A newer incarnation whose tracepoint events are not applied yet.
			continue
		}
		// The side's copy is overwritten in place: a poll of many sockets then makes no
		// garbage of them (Snapshot hands out copies). Its addresses are the side's.
		s.sock, s.sockSeen = makeSockRec(sk), ts.hi
		seen[s] = c
		if sk.Inode != 0 && s.owner == nil {
			needOwner = append(needOwner, sk.Inode)
		}
		if !tl.trace {
			tl.addDerived(c, r, sk.State, ts.hi, SourceDiag)
		} else if len(s.states) == 0 && tl.seenAgain(s, ts.hi) {
			tl.addDerived(c, r, sk.State, s.diagFirst, SourceDiag)
		}
	}

	// What the poll did not see.
	for s, c := range tl.twSides {
		if _, ok := tw[ends{s.addr, c.sides[1-sideRole(c, s)].addr}]; ok || p.start <= s.tw.lastStart {
			continue
		}
		s.tw.gone = true
		delete(tl.twSides, s)
		tl.addDerived(c, sideRole(c, s), Close, min(max(s.tw.deadline(), s.tw.last), p.at), SourceDiag)
	}
	for s, c := range tl.pendingTW {
		switch {
		case p.start <= s.handoff.at:
		case !tl.covered(s.addr):
			// The side lives in a namespace sock_diag does not poll: its timewait socket
			// cannot be seen, nor its absence. It stays handed to timewait (unconfirmed);
			// a later sighting would still confirm it.
			delete(tl.pendingTW, s)
		default:
			r := sideRole(c, s)
			if at, ok := resetAfterHandoff(c, r, p.start); ok {
				// The peer sent a reset toward this side after the handoff: a timewait
				// socket takes it and dies (Linux, with tcp_rfc1337 off), so the poll that
				// missed it proves nothing; a lab run saw the client's TIME_WAIT live 16 ms
				// this way, between two polls.
				tl.resolveKilled(c, r, at)
				continue
			}
			// No timewait socket after the handoff: the full socket really closed (for
			// example no timewait bucket was available).
			tl.resolveClosed(c, r)
		}
	}
	if !tl.trace {
		for s, c := range tl.fullSides {
			if _, ok := seen[s]; ok || s.tw != nil {
				continue
			}
			if _, ok := tw[ends{s.addr, c.peer(sideRole(c, s))}]; ok {
				continue
			}
			tl.addDerived(c, sideRole(c, s), Close, p.at, SourceDiag)
		}
	}
	tl.fullSides = seen
	tl.polled, tl.lastPoll = true, p
	return needOwner
}

// shrink returns b, emptied, for the next poll; nil when it is much bigger than this
// poll needed (a burst of sockets gone), so that it does not stay at its peak.
func shrink[T any](b []T) []T {
	if cap(b) > 4096 && cap(b) > 4*len(b) {
		return nil
	}
	return b[:0]
}

// covered reports whether sock_diag polls the namespace of a socket at a: it listed a
// socket with that local address.
func (tl *timeline) covered(a netip.AddrPort) bool { return tl.seenLocal[a.Addr()] }

// seenAgain counts sightings of a side that has no state yet: a state is taken from
// sock_diag on the second poll only, so that the tracepoint (read with some latency)
// has the first word.
func (tl *timeline) seenAgain(s *side, at time.Duration) bool {
	s.diagSeen++
	if s.diagSeen == 1 {
		s.diagFirst = at
	}
	return s.diagSeen >= 2
}

func sideRole(c *conn, s *side) role {
	if c.sides[0] == s {
		return client
	}
	return server
}

// setOwner records the process holding the full socket with this inode.
func (tl *timeline) setOwner(inode uint32, p Process) {
	tl.setOwners(map[uint32]Process{inode: p})
}

// setOwners records the processes holding the full sockets with these inodes.
func (tl *timeline) setOwners(owners map[uint32]Process) {
	for s := range tl.fullSides {
		if !s.sock.known || s.owner != nil {
			continue
		}
		if p, ok := owners[s.sock.inode]; ok {
			// Sides of one process share its record (an application holds thousands
			// of sockets); reports copy it.
			if tl.lastOwner == nil || *tl.lastOwner != p {
				cp := p
				tl.lastOwner = &cp
			}
			s.owner = tl.lastOwner
		}
	}
}

// annotate puts an external event on the connection of its 4-tuple. It keeps nothing
// n points to: n.rec may point into a buffer that is reused.
func (tl *timeline) annotate(n noteRec) {
	c, r := tl.lookup(n.src, n.dst, -1, false, n.at)
	k := keptNote{at: n.at}
	if r == client {
		k.seg.bits = noteFromClient
	}
	if !tl.compact(&k.seg, n) && (n.text != "" || n.rec != nil) {
		k.extra = &noteExtra{text: n.text}
		if n.rec != nil {
			cp := *n.rec
			k.extra.rec = &cp
		}
	}
	i := len(c.notes)
	for i > 0 && c.notes[i-1].at > n.at {
		i--
	}
	c.notes = slices.Insert(c.notes, i, k)
	if len(c.notes) > maxNotes {
		c.notes = slices.Delete(c.notes, maxNotes/2, maxNotes/2+1)
		c.notesLost++
	}
}

// compact puts n's record into seg if it holds it exactly, without text, and reports
// whether it did.
func (tl *timeline) compact(seg *segNote, n noteRec) bool {
	r := n.rec
	if r == nil || n.text != "" || r.Out != nil {
		return false
	}
	cl, sv := n.src, n.dst
	if r.Side == eventlog.Server {
		cl, sv = sv, cl
	}
	if r.Client != cl || r.Server != sv || int64(int32(r.Len)) != int64(r.Len) ||
		int64(int32(r.Incarnation)) != int64(r.Incarnation) {
		return false
	}
	rule, ok := tl.name(r.Rule)
	if !ok {
		return false
	}
	action, ok := tl.name(r.Action)
	if !ok {
		return false
	}
	*seg = segNote{time: r.Time, verdictTime: r.VerdictTime, held: r.HeldNS, seq: r.Seq, ack: r.Ack, id: r.ID,
		length: int32(r.Len), incarnation: int32(r.Incarnation), rule: rule, action: action,
		side: r.Side, flags: uint8(r.Flags), verdict: r.Verdict, bits: seg.bits | noteSeg}
	if r.Modified {
		seg.bits |= noteModified
	}
	if r.Injected {
		seg.bits |= noteInjected
	}
	return true
}

// name numbers a rule or action name; false when maxNames are numbered already.
func (tl *timeline) name(s string) (uint16, bool) {
	if i, ok := tl.nameIdx[s]; ok {
		return i, true
	}
	if len(tl.names) >= maxNames {
		return 0, false
	}
	i := uint16(len(tl.names))
	tl.names = append(tl.names, s)
	tl.nameIdx[s] = i
	return i, true
}

// note is the report's form of a note of connection c.
func (tl *timeline) note(c *conn, n keptNote, clk Clock) Note {
	out := Note{At: clk.Time(n.at), Src: c.key.server, Dst: c.key.client}
	if n.seg.bits&noteFromClient != 0 {
		out.Src, out.Dst = out.Dst, out.Src
	}
	if x := n.extra; x != nil {
		out.Text, out.Record = x.text, x.rec
		if x.rec != nil {
			cp := *x.rec // the report's copy: its reader may write it (the text, say)
			out.Record = &cp
		}
		return out
	}
	if n.seg.bits&noteSeg == 0 {
		return out
	}
	g := &n.seg
	r := &eventlog.Record{ID: g.id, Time: g.time, VerdictTime: g.verdictTime, Client: out.Src, Server: out.Dst,
		Incarnation: int(g.incarnation), Side: g.side, Seq: g.seq, Ack: g.ack, Len: int(g.length),
		Rule: tl.names[g.rule], Action: tl.names[g.action], Verdict: g.verdict, HeldNS: g.held,
		Modified: g.bits&noteModified != 0, Injected: g.bits&noteInjected != 0}
	for i := range 8 {
		if g.flags&(1<<i) != 0 {
			r.Flags |= 1 << i // the shifted 1 takes the type of Flags
		}
	}
	if g.side == eventlog.Server {
		r.Client, r.Server = r.Server, r.Client
	}
	out.Record = r
	return out
}

// closed reports whether nothing of the connection is held by an application: each side's
// full socket is gone (closed, or replaced by a timewait socket that may still be
// followed).
func (c *conn) closed() bool {
	for _, s := range c.sides {
		if len(s.states) > 0 && !s.ended() {
			return false
		}
	}
	return true
}

// report converts the timeline; now is the snapshot's time. Of the connections closed
// for their applications (see closed), only the latest maxConns are converted: the others
// — tens of thousands of TIME_WAIT sockets after a churn, each still followed — are
// counted in the summary it returns with those evicted, so that a report (and the time to
// take and write it) stays bounded.
func (tl *timeline) report(clk Clock, now time.Duration) ([]Connection, *Summary) {
	skip := make([]bool, len(tl.conns))
	sum, closed := tl.summary, 0
	sum.states = maps.Clone(sum.states) // the evicted ones' stay as they are
	for i := len(tl.conns) - 1; i >= 0; i-- {
		c := tl.conns[i]
		if !c.closed() {
			continue
		}
		if closed++; closed > tl.maxConns {
			skip[i] = true
			sum.add(c)
		}
	}
	out := make([]Connection, 0, min(len(tl.conns), 2*tl.maxConns))
	for i, c := range tl.conns {
		if skip[i] {
			continue
		}
		rc := Connection{Incarnation: c.incarnation, FirstSeen: clk.Time(c.firstSeen()), NotesDropped: c.notesLost}
		rc.Client = c.sides[client].report(clk, now, c.sides[server].addr)
		rc.Server = c.sides[server].report(clk, now, c.sides[client].addr)
		if len(c.notes) > 0 {
			rc.Notes = make([]Note, len(c.notes))
			for j, n := range c.notes {
				rc.Notes[j] = tl.note(c, n, clk)
			}
		}
		out = append(out, rc)
	}
	return out, sum.report(clk)
}

func (s *side) report(clk Clock, now time.Duration, peer netip.AddrPort) Side {
	rs := Side{Addr: s.addr, States: []StateEntry{}, HandedToTimewait: s.handoff != nil, Owner: copyOwner(s.owner)}
	for i, e := range s.states {
		se := StateEntry{State: e.state, At: clk.Time(e.at), Source: e.src()}
		switch {
		case i+1 < len(s.states):
			se.Dwell = Duration(s.states[i+1].at - e.at)
		case e.state != Close:
			se.Dwell, se.Ongoing = Duration(max(now-e.at, 0)), true
		}
		rs.States = append(rs.States, se)
	}
	ev := s.events()
	for _, e := range ev.retrans {
		rs.Retransmits = append(rs.Retransmits, RetransmitEntry{State: e.state, At: clk.Time(e.at), SynAck: e.synack})
	}
	for _, e := range ev.sent {
		rs.ResetsSent = append(rs.ResetsSent, ResetEntry{At: clk.Time(e.at), State: e.state, Reason: e.reason})
	}
	for _, e := range ev.recv {
		rs.ResetsReceived = append(rs.ResetsReceived, ResetEntry{At: clk.Time(e.at)})
	}
	if s.tw != nil {
		t := &Timewait{State: s.tw.state, FirstSeen: clk.Time(s.tw.first), LastSeen: clk.Time(s.tw.last),
			Expires: clk.Time(s.tw.deadline()), Gone: s.tw.gone}
		if !s.tw.gone {
			t.Remaining = Duration(max(s.tw.deadline()-now, 0))
		}
		for _, r := range s.tw.restarts {
			t.Restarts = append(t.Restarts, clk.Time(r))
		}
		rs.Timewait = t
	}
	if s.sock.known {
		k := s.sock.socket(s.addr, peer)
		rs.Socket, rs.SocketSeen = &k, clk.Time(s.sockSeen)
	}
	return rs
}

func copyOwner(p *Process) *Process {
	if p == nil {
		return nil
	}
	cp := *p
	return &cp
}

// leaks lists the sides in CLOSE_WAIT for at least threshold at now.
func (tl *timeline) leaks(clk Clock, now, threshold time.Duration) []Leak {
	var out []Leak
	for _, c := range tl.conns {
		for r, s := range c.sides {
			if s.last() != CloseWait {
				continue
			}
			e := s.states[len(s.states)-1]
			if now-e.at < threshold {
				continue
			}
			if _, seen := tl.fullSides[s]; tl.polled && !seen && e.at < tl.lastPoll.start && tl.covered(s.addr) {
				// sock_diag no longer sees the socket: its close was missed (lost events).
				continue
			}
			l := Leak{Local: s.addr, Remote: c.peer(role(r)), Since: clk.Time(e.at), Age: Duration(now - e.at),
				Source: e.src(), Owner: copyOwner(s.owner)}
			if s.sock.known {
				l.Inode, l.RecvQ, l.SendQ = s.sock.inode, s.sock.recvQ, s.sock.sendQ
			}
			out = append(out, l)
		}
	}
	return out
}
