package rules

import (
	"net/netip"
	"testing"
)

// A connection whose handshake was not queued is learnt from its first FIN, whichever
// side sends it and in both families: the server is the side on the target's port, the
// phases after the FIN hold, nth counts from there, and a later connection on the same
// 4-tuple is a new incarnation.
func TestLearnFromFirstFIN(t *testing.T) {
	for _, fam := range []struct {
		name           string
		client, server netip.AddrPort
	}{
		{"ipv4", testClient, testServer},
		{"ipv6", netip.MustParseAddrPort("[fd00:1::1]:40000"), netip.MustParseAddrPort("[fd00:2::2]:8080")},
	} {
		for _, first := range []Side{Client, Server} {
			t.Run(fam.name+"/"+first.String()+"-closes-first", func(t *testing.T) {
				closer, peer := fam.client, fam.server
				if first == Server {
					closer, peer = peer, closer
				}
				// Drop the closer's peer's ACK of the closer's FIN, once per connection.
				other := first.Other()
				ph := PhaseAckOfClientFIN
				if first == Server {
					ph = PhaseAckOfServerFIN
				}
				r := rule("drop-ack-of-fin", Match{Side: other, PureACK: true, Phases: ph, Nth: 1}, "drop", &DropAction{})
				h := newHarness(t, cfgOf(r), Options{})
				const cs, ps = 3_000_000_000, 1_000_000 // seqs far from any ISN the tracker could know
				id1 := h.handle(seg(closer, peer, fFIN|fACK, cs, ps, 0))
				o := h.observed[id1]
				if o.conn.Client() != fam.client || o.conn.Server() != fam.server || !o.conn.Inferred() || o.inc != 1 {
					t.Fatalf("learnt client %v server %v inferred %v inc %d", o.conn.Client(), o.conn.Server(), o.conn.Inferred(), o.inc)
				}
				if o.phases != PhaseEstablished {
					t.Errorf("the first FIN's phases %s, want established", o.phases)
				}
				id2 := h.handle(seg(peer, closer, fACK, ps, cs+1, 0))      // the ACK of the FIN: dropped
				id3 := h.handle(seg(peer, closer, fACK, ps, cs+1, 0))      // again: nth = 1 passed
				id4 := h.handle(seg(peer, closer, fFIN|fACK, ps, cs+1, 0)) // the peer's FIN
				id5 := h.handle(seg(closer, peer, fACK, cs+1, ps+1, 0))
				if h.verdicts[id2] != Drop || h.verdicts[id3] != Accept || h.verdicts[id4] != Accept || h.verdicts[id5] != Accept {
					t.Errorf("verdicts %v %v %v %v, want drop accept accept accept", h.verdicts[id2], h.verdicts[id3], h.verdicts[id4], h.verdicts[id5])
				}
				if p := h.observed[id2].phases; p&ph == 0 || p&(PhaseAfterClientFIN|PhaseAfterServerFIN) == 0 {
					t.Errorf("the ACK of the FIN: phases %s", p)
				}
				c := h.observed[id5].conn
				if !c.Finished() || !c.ClosedFirst(first) || c.ClosedFirst(other) {
					t.Errorf("finished %v, closed first %v/%v", c.Finished(), c.ClosedFirst(first), c.ClosedFirst(other))
				}
				// The same FIN again (a retransmission) is the same connection; a FIN at
				// another sequence number, the next one.
				if id := h.handle(seg(closer, peer, fFIN|fACK, cs, ps+1, 0)); h.observed[id].inc != 1 {
					t.Errorf("the retransmitted FIN started incarnation %d", h.observed[id].inc)
				}
				id6 := h.handle(seg(closer, peer, fFIN|fACK, cs+70000, ps+5000, 0))
				if o := h.observed[id6]; o.inc != 2 || o.conn == c || o.conn.Server() != fam.server {
					t.Errorf("the next connection's FIN: incarnation %d (same conn %v), server %v", o.inc, o.conn == c, o.conn.Server())
				}
				if id := h.handle(seg(peer, closer, fACK, ps+5000, cs+70001, 0)); h.verdicts[id] != Drop {
					t.Errorf("the second incarnation's ACK of the FIN: %v, want drop (nth counts per connection)", h.verdicts[id])
				}
				if n := h.records[len(h.records)-1].Incarnation; n != 2 {
					t.Errorf("record incarnation %d, want 2", n)
				}
			})
		}
	}
}
