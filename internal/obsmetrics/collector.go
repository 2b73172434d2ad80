package obsmetrics

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/finproxy/finproxy/observe"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxLeakSeries bounds the processes the CLOSE_WAIT leak metrics name one by one: beyond
// it, the processes holding the fewest leaked sockets are added up under pid and comm
// "other".
const MaxLeakSeries = 16

// Source is what the Collector reads at each scrape (an *observe.Observer).
type Source interface {
	Snapshot() observe.Report
	Leaks(threshold time.Duration) []observe.Leak
}

// Collector is a prometheus.Collector of an observation. The counters (retransmissions,
// resets) count the events given to Count, so that they never go back when the Observer
// forgets old connections; the gauges (sockets by state, leaks) are read from the Source
// at each scrape.
type Collector struct {
	src       Source
	leakAfter time.Duration
	scope     func() observe.Filter

	mu      sync.Mutex
	retrans map[[2]string]uint64 // side, state
	resets  map[[2]string]uint64 // side, direction

	sockets, retransmits, resetsD, leaks, leakAge, lost *prometheus.Desc
}

// New returns a Collector of src. scope gives, at each call, the connections counted
// (its ports are the servers': the side of a socket is "server" when its local port is
// one of them, "client" when its peer's is, "unknown" otherwise). A socket held in
// CLOSE_WAIT for leakAfter or longer is a leak.
func New(src Source, leakAfter time.Duration, scope func() observe.Filter) *Collector {
	return &Collector{
		src: src, leakAfter: leakAfter, scope: scope,
		retrans: map[[2]string]uint64{}, resets: map[[2]string]uint64{},
		sockets: prometheus.NewDesc("finproxy_observed_sockets",
			"Sockets of the observed connections by side and current state (CLOSE excluded).", []string{"side", "state"}, nil),
		retransmits: prometheus.NewDesc("finproxy_observed_retransmits_total",
			"Segments the observed sockets retransmitted, by side and the state they were in.", []string{"side", "state"}, nil),
		resetsD: prometheus.NewDesc("finproxy_observed_resets_total",
			"RSTs the observed sockets sent or received, by side.", []string{"side", "direction"}, nil),
		leaks: prometheus.NewDesc("finproxy_close_wait_leaks",
			"Sockets held in CLOSE_WAIT past the leak threshold, by the process holding them (at most 16 processes named; the rest as pid=\"other\").",
			[]string{"pid", "comm"}, nil),
		leakAge: prometheus.NewDesc("finproxy_close_wait_leak_oldest_seconds",
			"Age of the oldest CLOSE_WAIT leak of each process.", []string{"pid", "comm"}, nil),
		lost: prometheus.NewDesc("finproxy_observer_lost_events_total",
			"Tracepoint events the kernel's ring buffer overwrote before the Observer read them.", nil, nil),
	}
}

func hasPort(ports []uint16, p uint16) bool { return slices.Contains(ports, p) }

// side names the end of a socket at local, whose peer is remote.
func side(f observe.Filter, local, remote netip.AddrPort) string {
	switch {
	case hasPort(f.Ports, local.Port()) && !hasPort(f.Ports, remote.Port()):
		return "server"
	case hasPort(f.Ports, remote.Port()) && !hasPort(f.Ports, local.Port()):
		return "client"
	}
	return "unknown"
}

// Count counts an event of the Observer's stream (retransmissions and resets of the
// connections in scope; others are ignored).
func (c *Collector) Count(e observe.Event) {
	f := c.scope()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch v := e.(type) {
	case observe.Retransmit:
		if f.Match(v.Src, v.Dst) {
			c.retrans[[2]string{side(f, v.Src, v.Dst), v.State.String()}]++
		}
	case observe.ResetSent:
		if f.Match(v.Src, v.Dst) {
			c.resets[[2]string{side(f, v.Src, v.Dst), "sent"}]++
		}
	case observe.ResetReceived:
		if f.Match(v.Src, v.Dst) {
			c.resets[[2]string{side(f, v.Src, v.Dst), "received"}]++
		}
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sockets, c.retransmits, c.resetsD, c.leaks, c.leakAge, c.lost} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	f := c.scope()
	rep := c.src.Snapshot()
	socks := map[[2]string]int{}
	for i := range rep.Connections {
		conn := &rep.Connections[i]
		if !f.Match(conn.Client.Addr, conn.Server.Addr) {
			continue
		}
		for _, s := range []struct {
			name string
			side *observe.Side
		}{{"client", &conn.Client}, {"server", &conn.Server}} {
			n := len(s.side.States)
			if n == 0 || s.side.States[n-1].State == observe.Close || s.side.Timewait != nil && s.side.Timewait.Gone {
				continue
			}
			socks[[2]string{s.name, s.side.States[n-1].State.String()}]++
		}
	}
	for k, n := range socks {
		ch <- prometheus.MustNewConstMetric(c.sockets, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	c.mu.Lock()
	for k, n := range c.retrans {
		ch <- prometheus.MustNewConstMetric(c.retransmits, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	for k, n := range c.resets {
		ch <- prometheus.MustNewConstMetric(c.resetsD, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(rep.Stats.LostEvents))

	for _, g := range leakGroups(c.src.Leaks(c.leakAfter), f) {
		ch <- prometheus.MustNewConstMetric(c.leaks, prometheus.GaugeValue, float64(g.n), g.pid, g.comm)
		ch <- prometheus.MustNewConstMetric(c.leakAge, prometheus.GaugeValue, g.oldest.Seconds(), g.pid, g.comm)
	}
}

type leakGroup struct {
	pid, comm string
	n         int
	oldest    time.Duration
}

// leakGroups groups the leaks in scope by process, the MaxLeakSeries with the most
// leaks by name, the others as "other".
func leakGroups(ls []observe.Leak, f observe.Filter) []leakGroup {
	by := map[[2]string]*leakGroup{}
	for _, l := range ls {
		if !f.Match(l.Local, l.Remote) {
			continue
		}
		k := [2]string{"unknown", "unknown"}
		if l.Owner != nil {
			k = [2]string{strconv.Itoa(l.Owner.Pid), l.Owner.Comm}
		}
		g := by[k]
		if g == nil {
			g = &leakGroup{pid: k[0], comm: k[1]}
			by[k] = g
		}
		g.n++
		g.oldest = max(g.oldest, time.Duration(l.Age))
	}
	var gs []leakGroup
	for _, g := range by {
		gs = append(gs, *g)
	}
	slices.SortFunc(gs, func(a, b leakGroup) int {
		return cmp.Or(b.n-a.n, cmp.Compare(a.pid, b.pid), cmp.Compare(a.comm, b.comm))
	})
	if len(gs) > MaxLeakSeries {
		other := leakGroup{pid: "other", comm: "other"}
		for _, g := range gs[MaxLeakSeries:] {
			other.n += g.n
			other.oldest = max(other.oldest, g.oldest)
		}
		gs = append(gs[:MaxLeakSeries], other)
	}
	return gs
}
