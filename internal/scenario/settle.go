package scenario

import (
	"context"
	"time"

	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
)

// retransmitHorizon is how far ahead a pending retransmission keeps a run going. An RTO
// is the smoothed RTT plus four times its variance (at least 200 ms): a handshake that a
// loaded machine answered in 300 ms gives a first RTO near 900 ms, longer than Settle.
// Beyond the horizon a timer belongs to a long backoff (a FIN dropped every time) that
// the run does not wait for.
const retransmitHorizon = 2 * time.Second

// settle returns once the teardown has gone quiet: the event log has not grown for
// quiet, and no socket of the run (client and server namespaces, the server's port)
// has a retransmission, loss probe or zero-window probe due within retransmitHorizon.
// A timer due sooner is waited for, then the log must be quiet again (for a quarter of
// quiet: what follows a retransmission is an answer within an RTT).
func settle(ctx context.Context, diags []*observe.Diag, logPath string, quiet time.Duration) {
	for {
		waitQuiet(ctx, logPath, quiet)
		due, ok := nextRetransmit(diags)
		if !ok || due > retransmitHorizon {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(due + 20*time.Millisecond):
		}
		quiet = min(quiet, max(quiet/4, 100*time.Millisecond))
	}
}

// openDiags opens a sock_diag source for f in the client's and the server's namespace
// (those that open).
func openDiags(t *lab.Topology, f observe.Filter) []*observe.Diag {
	var diags []*observe.Diag
	for _, ns := range []string{t.Client, t.Server} {
		if d, err := observe.OpenDiag(ns, f); err == nil {
			diags = append(diags, d)
		}
	}
	return diags
}

func closeDiags(diags []*observe.Diag) {
	for _, d := range diags {
		d.Close()
	}
}

// nextRetransmit returns the time until the soonest retransmission-like timer of a full
// socket in diags fires.
func nextRetransmit(diags []*observe.Diag) (time.Duration, bool) {
	var socks []observe.Socket
	for _, d := range diags {
		s, err := d.Dump()
		if err != nil {
			return 0, false
		}
		socks = append(socks, s...)
	}
	return soonestRetransmit(socks)
}

// soonestRetransmit picks, among socks, the soonest timer that will send a segment by
// itself: retransmission (RTO, loss probe, SYN-ACK) or zero-window probe. Keepalive
// and timewait timers do not count.
func soonestRetransmit(socks []observe.Socket) (time.Duration, bool) {
	var due time.Duration
	found := false
	for _, s := range socks {
		if s.Timer != observe.TimerRetrans && s.Timer != observe.TimerPersist {
			continue
		}
		if !found || s.Expires < due {
			due, found = s.Expires, true
		}
	}
	return due, found
}
