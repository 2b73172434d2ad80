package main

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/finproxy/finproxy/control"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/obsmetrics"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/story"
)

// serveObserved is serve's Observer as the API shows it: the connections of the current
// target with their timelines, and the Observer's events on the event streams.
type serveObserved struct {
	svc  *runner.Service
	o    *observe.Observer
	coll *obsmetrics.Collector // on /metrics
}

var _ control.Observed = (*serveObserved)(nil)

// filter selects the connections of the current rule set's target (all without one),
// and the clients' ends of the redirected ones: a client's socket names the listen
// address it connected to, not the upstream.
func (a *serveObserved) filter() observe.Filter {
	t := a.svc.Config().Target
	f := observe.Filter{Addrs: t.Addresses}
	if t.Port != 0 {
		f.Ports = append([]uint16{t.Port}, t.Ports...)
	}
	for _, r := range a.svc.Redirects() {
		if len(f.Ports) > 0 && !slices.Contains(f.Ports, r.Listen.Port()) {
			f.Ports = append(f.Ports, r.Listen.Port())
		}
		switch {
		case len(f.Addrs) == 0:
		case r.Listen.Addr().IsUnspecified():
			f.Addrs = nil // any address
		default:
			f.Addrs = append(f.Addrs, netip.PrefixFrom(r.Listen.Addr(), r.Listen.Addr().BitLen()))
		}
	}
	return f
}

// joinRedirected puts the client's end of each redirected connection (its socket names
// the listen address) on the connection of the upstream's socket (which names the
// client's real address), as one connection; a client's end with no upstream connection
// seen stays as it is.
func joinRedirected(conns []observe.Connection, rd []nfq.Redirect) []observe.Connection {
	if len(rd) == 0 {
		return conns
	}
	type key struct{ client, server netip.AddrPort }
	idx := map[key]int{}
	for i, c := range conns {
		idx[key{c.Client.Addr, c.Server.Addr}] = i // the latest incarnation wins
	}
	drop := map[int]bool{}
	for i, c := range conns {
		for _, r := range rd {
			l := c.Server.Addr
			if l.Port() != r.Listen.Port() || !r.Listen.Addr().IsUnspecified() && l.Addr() != r.Listen.Addr() {
				continue
			}
			if j, ok := idx[key{c.Client.Addr, r.Upstream}]; ok && j != i && len(conns[j].Client.States) == 0 {
				conns[j].Client = c.Client
				conns[j].Notes = append(conns[j].Notes, c.Notes...)
				drop[i] = true
			}
		}
	}
	out := conns[:0]
	for i, c := range conns {
		if !drop[i] {
			out = append(out, c)
		}
	}
	return out
}

// Connections is the Observer's snapshot, restricted to the current target, in the
// shapes of the lab's report.json (client.Connections).
func (a *serveObserved) Connections() (any, error) {
	rep := a.o.Snapshot()
	f := a.filter()
	rep.Connections = joinRedirected(rep.Connections, a.svc.Redirects())
	out := client.Connections{Connections: []client.Connection{}, Warnings: rep.Warnings}
	for i := range rep.Connections {
		c := &rep.Connections[i]
		if !f.Match(c.Client.Addr, c.Server.Addr) {
			continue
		}
		conn := client.Connection{Incarnation: c.Incarnation, Client: connSide(&c.Client), Server: connSide(&c.Server)}
		for _, n := range c.Notes {
			r := n.Record
			if r == nil || !story.Belongs(*r, c) {
				continue
			}
			seg := client.Segment{From: r.Side.String(), Flags: r.Flags.String(), Seq: r.Seq, Ack: r.Ack, Len: r.Len,
				Verdict: r.Verdict.String(), Rule: r.Rule, TimeNS: r.Time, HeldNS: r.HeldNS}
			if r.Side == rules.Server {
				conn.Server.Segments = append(conn.Server.Segments, seg)
			} else {
				conn.Client.Segments = append(conn.Client.Segments, seg)
			}
		}
		out.Connections = append(out.Connections, conn)
	}
	return out, nil
}

func connSide(s *observe.Side) client.ConnSide {
	cs := client.ConnSide{Addr: s.Addr.String(), States: []string{}, Timeline: []client.StateEntry{},
		Retransmits: []client.StateAt{}, ResetsSent: []client.StateAt{}, ResetsReceived: []client.StateAt{}, Segments: []client.Segment{}}
	for _, st := range s.States {
		cs.States = append(cs.States, st.State.String())
		cs.Timeline = append(cs.Timeline, client.StateEntry{State: st.State.String(), At: st.At,
			Dwell: time.Duration(st.Dwell).String(), Ongoing: st.Ongoing, Source: st.Source})
	}
	for _, r := range s.Retransmits {
		cs.Retransmits = append(cs.Retransmits, client.StateAt{State: r.State.String(), At: r.At})
	}
	for _, r := range s.ResetsSent {
		cs.ResetsSent = append(cs.ResetsSent, client.StateAt{State: r.State.String(), Reason: r.Reason, At: r.At})
	}
	for _, r := range s.ResetsReceived {
		cs.ResetsReceived = append(cs.ResetsReceived, client.StateAt{At: r.At})
	}
	return cs
}

// follow hands the Observer's events on the current target to the API's event streams
// until the Observer's stream ends or ctx does.
func (a *serveObserved) follow(ctx context.Context, srv *control.Server) {
	evs := a.o.Events()
	f := a.filter()
	refresh := time.Now()
	for {
		var e observe.Event
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-evs:
			if !ok {
				return
			}
			e = ev
		}
		a.coll.Count(e)
		if time.Since(refresh) > 100*time.Millisecond {
			f, refresh = a.filter(), time.Now() // the target changes with the rule set
		}
		var kind string
		var src, dst netip.AddrPort
		switch v := e.(type) {
		case observe.StateChange:
			kind, src, dst = "state", v.Src, v.Dst
		case observe.Retransmit:
			kind, src, dst = "retransmit", v.Src, v.Dst
		case observe.ResetSent:
			kind, src, dst = "reset", v.Src, v.Dst
		case observe.ResetReceived:
			kind, src, dst = "reset", v.Src, v.Dst
		default:
			continue
		}
		if f.Match(src, dst) {
			srv.PublishObserved(kind, e)
		}
	}
}
