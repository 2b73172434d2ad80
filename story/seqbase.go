package story

import (
	"github.com/finproxy/finproxy/eventlog"
	"github.com/finproxy/finproxy/segment"
)

// SeqBase is what a connection's sequence and acknowledgment numbers are shown relative
// to, per side: its initial sequence number when its SYN was queued (the handshake's
// SYN then reads seq=0 and the first data byte seq=1, as in Wireshark); otherwise the
// sequence number of its first segment finproxy saw (then seq=0), or else the first
// acknowledgment its peer sent (the next number it would use). Those without the SYN are
// marked: a reader must know that seq=0 is not the start of the stream.
type SeqBase struct {
	Client, Server         uint32
	HaveClient, HaveServer bool
	// FromSYN says whether each side's base is its initial sequence number.
	ClientFromSYN, ServerFromSYN bool
}

// NewSeqBase finds the bases of one connection's records (in queue order).
func NewSeqBase(recs []eventlog.Record) SeqBase {
	var b SeqBase
	for _, r := range recs {
		if r.Injected || !r.Flags.Has(segment.SYN) {
			continue
		}
		switch {
		case r.Side == eventlog.Client && !r.Flags.Has(segment.ACK) && !b.ClientFromSYN:
			b.Client, b.HaveClient, b.ClientFromSYN = r.Seq, true, true
		case r.Side == eventlog.Server && r.Flags.Has(segment.ACK) && !b.ServerFromSYN:
			b.Server, b.HaveServer, b.ServerFromSYN = r.Seq, true, true
		}
	}
	for _, r := range recs {
		if r.Injected {
			continue
		}
		switch r.Side {
		case eventlog.Client:
			if !b.HaveClient {
				b.Client, b.HaveClient = r.Seq, true
			}
			if !b.HaveServer && r.Flags.Has(segment.ACK) {
				b.Server, b.HaveServer = r.Ack, true
			}
		case eventlog.Server:
			if !b.HaveServer {
				b.Server, b.HaveServer = r.Seq, true
			}
			if !b.HaveClient && r.Flags.Has(segment.ACK) {
				b.Client, b.HaveClient = r.Ack, true
			}
		}
	}
	return b
}

// Rel returns a segment's sequence and acknowledgment numbers relative to the bases (as
// they are when a base is missing).
func (b SeqBase) Rel(side eventlog.Side, seq, ack uint32) (uint32, uint32) {
	own, ownOK, peer, peerOK := b.Client, b.HaveClient, b.Server, b.HaveServer
	if side == eventlog.Server {
		own, ownOK, peer, peerOK = b.Server, b.HaveServer, b.Client, b.HaveClient
	}
	if ownOK {
		seq -= own
	}
	if peerOK {
		ack -= peer
	}
	return seq, ack
}

// FromSYN reports whether both sides' numbers are relative to their SYNs.
func (b SeqBase) FromSYN() bool { return b.ClientFromSYN && b.ServerFromSYN }
