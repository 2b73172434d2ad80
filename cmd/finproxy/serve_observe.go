package main

import (
	"context"
	"net/netip"
	"time"

	"github.com/finproxy/finproxy/control"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/viz"
)

// serveObserved is serve's Observer as the API shows it: the connections of the current
// target with their timelines, and the Observer's events on the event streams.
type serveObserved struct {
	svc *runner.Service
	o   *observe.Observer
}

var _ control.Observed = (*serveObserved)(nil)

// filter selects the connections of the current rule set's target (all without one).
func (a *serveObserved) filter() observe.Filter {
	t := a.svc.Config().Target
	f := observe.Filter{Addrs: t.Addresses}
	if t.Port != 0 {
		f.Ports = append([]uint16{t.Port}, t.Ports...)
	}
	return f
}

// Connections is the Observer's snapshot, restricted to the current target, in the
// shapes of the lab's report.json (client.Connections).
func (a *serveObserved) Connections() (any, error) {
	rep := a.o.Snapshot()
	f := a.filter()
	out := client.Connections{Connections: []client.Connection{}, Warnings: rep.Warnings}
	for i := range rep.Connections {
		c := &rep.Connections[i]
		if !f.Match(c.Client.Addr, c.Server.Addr) {
			continue
		}
		conn := client.Connection{Incarnation: c.Incarnation, Client: connSide(&c.Client), Server: connSide(&c.Server)}
		for _, n := range c.Notes {
			r, ok := runner.SegmentOf(n)
			if !ok || !viz.Belongs(r, c) {
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
