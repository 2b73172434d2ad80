package rules

import (
	"net/netip"
	"slices"
	"time"

	"github.com/finproxy/finproxy/segment"
)

// Tracker defaults.
const (
	// DefaultMaxConns bounds the connection table.
	DefaultMaxConns = 65536
	// DefaultIdleTimeout forgets a connection that has been silent this long.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultFinishedTimeout forgets a finished connection (both FINs acknowledged, or a
	// RST seen) that has been silent this long.
	DefaultFinishedTimeout = 75 * time.Second
)

// Serial number arithmetic (RFC 1982) on 32-bit sequence numbers: a is before b when
// b - a, taken modulo 2^32, is in (0, 2^31).

func seqLT(a, b uint32) bool  { return int32(a-b) < 0 }
func seqGEQ(a, b uint32) bool { return int32(a-b) >= 0 }

// sideState is what the tracker knows of one endpoint of a connection.
type sideState struct {
	isn      uint32 // valid when isnKnown
	isnKnown bool   // from this side's SYN, or implied by the peer's SYN|ACK
	synSeen  bool
	synAcked bool // the peer acknowledged this side's SYN (its half of the handshake is done)
	finSeen  bool
	finSeq   uint32 // sequence number of the FIN itself (seq + payload length of the FIN segment)
	finAck   uint32 // ack field of this side's latest FIN segment
	finAcked bool   // the peer acknowledged the FIN (ack >= finSeq+1)
	finFirst bool   // the first FIN did not acknowledge a FIN of the peer
	rstSeen  bool
	seqValid bool
	seqNext  uint32 // highest seq + sequence length seen
	ackValid bool
	ackHigh  uint32 // highest ack seen
	segments uint64
	// Payload bytes sent (Conn.Sent): dataNext is the sequence number after the highest
	// payload byte seen, valid from this side's first data segment.
	dataValid bool
	dataNext  uint32
	sent      uint64
}

// ruleConnState is one rule's bookkeeping on one connection.
type ruleConnState struct {
	seen  uint32 // segments that satisfied the rule's side, flags, payload and phases (for nth)
	acted uint32 // times the rule acted (for limit)
	v     int64  // the action's own (Context.RuleVar)
}

// Conn is one tracked TCP connection (one incarnation of a 4-tuple), as seen from the
// segments that reached finproxy. A segment counts as seen when it is queued, whatever its
// verdict: a dropped FIN has been seen, and its retransmission comes after it.
//
// A Conn is owned by the engine: read it only while the engine hands it to you (in an
// action's Apply, or a Hold's Until and Decide functions).
type Conn struct {
	key            tupleKey
	client, server netip.AddrPort
	inferred       bool
	incarnation    int
	created        time.Time
	lastSeen       time.Time
	sides          [2]sideState // [0] client, [1] server
	// alias is the client as the server sees it when a rule rewrites its port
	// (Context.RewriteClientPort); invalid otherwise.
	alias netip.AddrPort

	rules    []ruleConnState
	rulesBuf [4]ruleConnState

	// held are the segments held until an event, in the order they were held.
	held []*pending

	// place in the tracker's idle lists; list is nil when the conn is no longer tracked.
	prev, next *Conn
	list       *connList
}

func (c *Conn) side(s Side) *sideState {
	if s == Server {
		return &c.sides[1]
	}
	return &c.sides[0]
}

// Client returns the endpoint that opened the connection (sent the SYN); for a connection
// whose SYN was not seen, the endpoint that is not the server.
func (c *Conn) Client() netip.AddrPort { return c.client }

// Server returns the endpoint that accepted the connection.
func (c *Conn) Server() netip.AddrPort { return c.server }

// SideOf returns the side of endpoint a, AnySide if it is neither.
func (c *Conn) SideOf(a netip.AddrPort) Side {
	switch a {
	case c.client:
		return Client
	case c.server:
		return Server
	}
	return AnySide
}

// Inferred reports whether the sides were inferred (the connection predates finproxy, its
// handshake was not seen): the server is the endpoint on the config's target port, or
// else the one with the lower port.
func (c *Conn) Inferred() bool { return c.inferred }

// Incarnation numbers the connections seen on this 4-tuple, from 1: a new SYN after the
// previous connection ended starts the next one.
func (c *Conn) Incarnation() int { return c.incarnation }

// Created is when the connection's first segment was seen; LastSeen when its latest was.
func (c *Conn) Created() time.Time { return c.created }

// LastSeen is when the connection's latest segment was seen.
func (c *Conn) LastSeen() time.Time { return c.lastSeen }

// HandshakeDone reports whether both SYNs have been acknowledged (always true for an
// inferred connection; also once either side sent a FIN, as with control-only queueing the
// handshake's last ACK is never seen).
func (c *Conn) HandshakeDone() bool { return c.sides[0].synAcked && c.sides[1].synAcked }

// SYNSeen reports whether side s's SYN was seen.
func (c *Conn) SYNSeen(s Side) bool { return c.side(s).synSeen }

// FINSeen reports whether side s has sent a FIN.
func (c *Conn) FINSeen(s Side) bool { return c.side(s).finSeen }

// FINSeq is the sequence number of side s's FIN (the FIN flag itself: seq + payload length
// of the first segment that carried it); its acknowledgment is FINSeq+1. Zero before FINSeen.
func (c *Conn) FINSeq(s Side) uint32 { return c.side(s).finSeq }

// FINAck is the ack field of side s's latest FIN segment. Zero before FINSeen.
func (c *Conn) FINAck(s Side) uint32 { return c.side(s).finAck }

// FINAcked reports whether the peer of s acknowledged s's FIN.
func (c *Conn) FINAcked(s Side) bool { return c.side(s).finAcked }

// ClosedFirst reports whether side s's first FIN did not acknowledge a FIN of the peer:
// s closed before the peer's FIN reached it (or both closed at about the same time), so
// s is an active closer and its socket goes through TIME_WAIT. False before FINSeen.
func (c *Conn) ClosedFirst(s Side) bool { return c.side(s).finFirst }

// ServerSideClient is the client as the server sees it: Client, unless a rule rewrites
// the client's port (Context.RewriteClientPort).
func (c *Conn) ServerSideClient() netip.AddrPort {
	if c.alias.IsValid() {
		return c.alias
	}
	return c.client
}

// RSTSeen reports whether side s has sent a RST.
func (c *Conn) RSTSeen(s Side) bool { return c.side(s).rstSeen }

// ISN is side s's initial sequence number (zero when its SYN was not seen, nor implied by
// the peer's SYN|ACK).
func (c *Conn) ISN(s Side) uint32 { return c.side(s).isn }

// NextSeq is the highest sequence number side s has used, plus one: the highest seq plus
// the sequence space of its segment (zero before side s sent anything).
func (c *Conn) NextSeq(s Side) uint32 { return c.side(s).seqNext }

// HighestAck is the highest ack number side s has sent (zero before its first ACK).
func (c *Conn) HighestAck(s Side) uint32 { return c.side(s).ackHigh }

// Segments counts the segments side s has sent.
func (c *Conn) Segments(s Side) uint64 { return c.side(s).segments }

// Sent counts the payload bytes side s has sent, by sequence number: a retransmitted
// byte counts once, and a byte whose segment finproxy did not see (not queued, or lost
// before the hook) counts once a later byte is seen. The count starts at side s's first
// byte when its SYN was seen, otherwise at the first data segment seen.
func (c *Conn) Sent(s Side) uint64 { return c.side(s).sent }

// DataNext is the sequence number after the highest payload byte side s has sent (valid
// once Sent is not zero): byte Sent-k is at DataNext-k.
func (c *Conn) DataNext(s Side) uint32 { return c.side(s).dataNext }

// Finished reports whether the connection is over: both FINs acknowledged, or a RST seen.
func (c *Conn) Finished() bool {
	cl, sv := &c.sides[0], &c.sides[1]
	return cl.rstSeen || sv.rstSeen || (cl.finAcked && sv.finAcked)
}

// EventSeen reports whether ev has happened, judged for a segment sent by sender.
// EventNone never happens.
func (c *Conn) EventSeen(ev Event, sender Side) bool {
	switch ev {
	case EventPeerFIN:
		return c.side(sender.Other()).finSeen
	case EventOwnFIN:
		return c.side(sender).finSeen
	case EventClientFIN:
		return c.sides[0].finSeen
	case EventServerFIN:
		return c.sides[1].finSeen
	case EventBothFINs:
		return c.sides[0].finSeen && c.sides[1].finSeen
	}
	return false
}

// Phases returns the phases that hold for segment s given what was seen before it (call
// it before the segment is applied; the engine does).
func (c *Conn) Phases(s *segment.Segment) Phase {
	return c.phases(c.SideOf(s.Src), s)
}

func (c *Conn) phases(side Side, s *segment.Segment) Phase {
	cl, sv := &c.sides[0], &c.sides[1]
	var p Phase
	if !c.HandshakeDone() {
		p |= PhaseHandshake
	} else if !cl.finSeen && !sv.finSeen {
		p |= PhaseEstablished
	}
	if cl.finSeen {
		p |= PhaseAfterClientFIN
	}
	if sv.finSeen {
		p |= PhaseAfterServerFIN
	}
	if cl.finSeen && sv.finSeen {
		p |= PhaseAfterBothFINs
	}
	if s.Flags&segment.ACK != 0 {
		if side == Server && cl.finSeen && s.Ack == cl.finSeq+1 {
			p |= PhaseAckOfClientFIN
		}
		if side == Client && sv.finSeen && s.Ack == sv.finSeq+1 {
			p |= PhaseAckOfServerFIN
		}
	}
	return p
}

// apply updates the connection with segment s sent by side.
func (c *Conn) apply(side Side, s *segment.Segment, now time.Time) {
	me, peer := c.side(side), c.side(side.Other())
	me.segments++
	c.lastSeen = now
	f := s.Flags
	if f&segment.SYN != 0 && !me.synSeen {
		me.synSeen = true
		me.isn, me.isnKnown = s.Seq, true
		if f&segment.ACK != 0 && !peer.isnKnown && !peer.synAcked {
			// A SYN|ACK whose SYN we missed: the peer's ISN is implied.
			peer.isn, peer.isnKnown = s.Ack-1, true
			peer.synAcked = true
		}
	}
	if f&segment.ACK != 0 {
		if peer.isnKnown && !peer.synAcked && seqGEQ(s.Ack, peer.isn+1) {
			peer.synAcked = true
		}
		if peer.finSeen && !peer.finAcked && seqGEQ(s.Ack, peer.finSeq+1) {
			peer.finAcked = true
		}
		if !me.ackValid || seqLT(me.ackHigh, s.Ack) {
			me.ackHigh, me.ackValid = s.Ack, true
		}
	}
	if f&segment.FIN != 0 {
		if !me.finSeen {
			me.finSeen = true
			me.finSeq = s.Seq + s.SeqLen() - 1
			me.finFirst = !(peer.finSeen && f&segment.ACK != 0 && seqGEQ(s.Ack, peer.finSeq+1))
		}
		me.finAck = s.Ack
		// Whoever sends a FIN has left the handshake (its last ACK may not be queued).
		c.sides[0].synAcked, c.sides[1].synAcked = true, true
	}
	if f&segment.RST != 0 {
		me.rstSeen = true
	}
	if s.PayloadLen > 0 {
		start := s.Seq
		if f&segment.SYN != 0 {
			start++
		}
		end := start + uint32(s.PayloadLen)
		if !me.dataValid {
			me.dataNext, me.dataValid = start, true
			if me.isnKnown && seqLT(me.isn, start) {
				me.dataNext = me.isn + 1
			}
		}
		if seqLT(me.dataNext, end) {
			me.sent += uint64(end - me.dataNext)
			me.dataNext = end
		}
	}
	if end := s.Seq + s.SeqLen(); !me.seqValid || seqLT(me.seqNext, end) {
		me.seqNext, me.seqValid = end, true
	}
}

// restarts reports whether segment s, sent by side, starts a new incarnation of c: a SYN
// without ACK that is not a retransmission of the SYN that opened c; or, when c is over
// (both FINs acknowledged), a FIN of a side whose FIN c has seen at another sequence
// number: the next connection on the 4-tuple, whose handshake was not queued (a hook
// that queues only the teardown).
func (c *Conn) restarts(side Side, s *segment.Segment) bool {
	if s.Flags&(segment.SYN|segment.FIN) == segment.FIN {
		me := c.side(side)
		return c.sides[0].finAcked && c.sides[1].finAcked && me.finSeen && s.Seq+s.SeqLen()-1 != me.finSeq
	}
	if s.Flags&(segment.SYN|segment.ACK) != segment.SYN {
		return false
	}
	cl, sv := &c.sides[0], &c.sides[1]
	retransmit := side == Client && cl.isnKnown && s.Seq == cl.isn &&
		!cl.finSeen && !sv.finSeen && !cl.rstSeen && !sv.rstSeen
	return !retransmit
}

// tupleKey is a 4-tuple, unordered: a is the lower endpoint.
type tupleKey struct{ a, b netip.AddrPort }

func keyOf(x, y netip.AddrPort) tupleKey {
	if x.Compare(y) > 0 {
		x, y = y, x
	}
	return tupleKey{x, y}
}

// inferSides says who is client and who is server for segment s when its connection is
// new: the sender of a SYN is the client, the sender of a SYN|ACK the server; otherwise
// the endpoint on the target's port is the server, or else the one within the target's
// addresses, or else the one with the lower port.
func inferSides(s *segment.Segment, target *Target) (client, server netip.AddrPort, inferred bool) {
	switch {
	case s.Flags&(segment.SYN|segment.ACK) == segment.SYN:
		return s.Src, s.Dst, false
	case s.Flags&(segment.SYN|segment.ACK) == segment.SYN|segment.ACK:
		return s.Dst, s.Src, false
	}
	sp, dp := s.Src.Port(), s.Dst.Port()
	srcOn, dstOn := target.hasPort(sp), target.hasPort(dp)
	srcIn, dstIn := inPrefixes(s.Src.Addr(), target.Addresses), inPrefixes(s.Dst.Addr(), target.Addresses)
	switch {
	case dstOn && !srcOn:
		return s.Src, s.Dst, true
	case srcOn && !dstOn:
		return s.Dst, s.Src, true
	case dstIn && !srcIn:
		return s.Src, s.Dst, true
	case srcIn && !dstIn:
		return s.Dst, s.Src, true
	case sp < dp:
		return s.Dst, s.Src, true
	case dp < sp:
		return s.Src, s.Dst, true
	}
	// Same port on both ends: the lower address is taken as the server.
	if s.Src.Addr().Less(s.Dst.Addr()) {
		return s.Dst, s.Src, true
	}
	return s.Src, s.Dst, true
}

// hasPort reports whether p is one of the target's ports.
func (t *Target) hasPort(p uint16) bool {
	return t.Port != 0 && (p == t.Port || slices.Contains(t.Ports, p))
}

func inPrefixes(a netip.Addr, prefixes []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// connList is a list of connections, least recently seen first.
type connList struct {
	head, tail *Conn
	n          int
}

func (l *connList) pushBack(c *Conn) {
	c.list = l
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
	l.n++
}

func (l *connList) remove(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next, c.list = nil, nil, nil
	l.n--
}

// tracker is the connection table. Connections sit in one of two lists by how long they
// may stay idle (open, or finished), each least recently seen first, so that expiry only
// ever looks at list heads.
type tracker struct {
	conns      map[tupleKey]*Conn
	open, done connList
	max        int
	idle       time.Duration
	finished   time.Duration
	target     Target
	nrules     int
}

func newTracker(maxConns int, idle, finished time.Duration, target Target, nrules int) *tracker {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	if finished <= 0 {
		finished = DefaultFinishedTimeout
	}
	finished = min(finished, idle)
	return &tracker{
		conns:    make(map[tupleKey]*Conn),
		max:      maxConns,
		idle:     idle,
		finished: finished,
		target:   target,
		nrules:   nrules,
	}
}

// lookup finds the connection of segment s without changing anything.
func (t *tracker) lookup(s *segment.Segment) *Conn { return t.conns[keyOf(s.Src, s.Dst)] }

// get returns the connection segment s belongs to, creating it (or its next incarnation)
// as needed, and the side that sent s.
func (t *tracker) get(s *segment.Segment, now time.Time) (*Conn, Side) {
	k := keyOf(s.Src, s.Dst)
	c := t.conns[k]
	incarnation := 1
	if c != nil {
		side := c.SideOf(s.Src)
		if !c.restarts(side, s) {
			return c, side
		}
		incarnation = c.incarnation + 1
		t.drop(c)
	}
	for len(t.conns) >= t.max {
		t.evictOne()
	}
	c = &Conn{key: k, incarnation: incarnation, created: now, lastSeen: now}
	c.client, c.server, c.inferred = inferSides(s, &t.target)
	if c.inferred {
		c.sides[0].synAcked, c.sides[1].synAcked = true, true
	}
	if t.nrules <= len(c.rulesBuf) {
		c.rules = c.rulesBuf[:t.nrules]
	} else {
		c.rules = make([]ruleConnState, t.nrules)
	}
	t.conns[k] = c
	t.open.pushBack(c)
	return c, c.SideOf(s.Src)
}

// touch moves c to the back of its list after a segment was applied (to the finished
// list once it is finished).
func (t *tracker) touch(c *Conn) {
	if c.list == nil {
		return
	}
	l := &t.open
	if c.Finished() {
		l = &t.done
	}
	if c.list == l && l.tail == c {
		return
	}
	c.list.remove(c)
	l.pushBack(c)
}

// drop removes c from the table. Segments of c that await their verdict keep c alive;
// as nothing re-checks their release conditions any more, they get their verdict when
// their timer fires (or at Close).
func (t *tracker) drop(c *Conn) {
	if c.list == nil {
		return
	}
	c.list.remove(c)
	if t.conns[c.key] == c {
		delete(t.conns, c.key)
	}
}

// evictOne drops the connection that would expire first: the least recently seen of the
// open ones or of the finished ones, whichever is nearer its timeout.
func (t *tracker) evictOne() {
	o, d := t.open.head, t.done.head
	switch {
	case o == nil && d == nil:
	case o == nil:
		t.drop(d)
	case d == nil:
		t.drop(o)
	case d.lastSeen.Add(t.finished).After(o.lastSeen.Add(t.idle)):
		t.drop(o)
	default:
		t.drop(d)
	}
}

// expire drops connections idle past their timeout, at most budget from each list
// (budget < 0: all of them).
func (t *tracker) expire(now time.Time, budget int) {
	for _, x := range [2]struct {
		l *connList
		d time.Duration
	}{{&t.open, t.idle}, {&t.done, t.finished}} {
		for n := 0; budget < 0 || n < budget; n++ {
			c := x.l.head
			if c == nil || now.Sub(c.lastSeen) < x.d {
				break
			}
			t.drop(c)
		}
	}
}

func (t *tracker) len() int { return len(t.conns) }
