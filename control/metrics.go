package control

import (
	"net/http"
	"time"

	"github.com/finproxy/finproxy/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the Prometheus metrics of /metrics: counters read from the Backend at
// each scrape, and the verdict latency histogram fed by Record.
type metrics struct {
	s       *Server
	reg     *prometheus.Registry
	latency prometheus.Histogram

	rule, received, verdicts, enobufs, verdictErrors, kernelDropped, userDropped,
	waiting, undecodable, replacements *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		s:   s,
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "finproxy_verdict_latency_seconds",
			Help: "Time from a segment's receipt from the queue to its verdict (delays and holds included).",
			// 10 µs to ~42 s.
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 12),
		}),
		rule: prometheus.NewDesc("finproxy_rule_segments_total",
			"Segments each rule acted on (outcome matched), and what became of them, since finproxy serve started.",
			[]string{"rule", "outcome"}, nil),
		received:      prometheus.NewDesc("finproxy_queue_received_total", "Segments read from the NFQUEUE.", nil, nil),
		verdicts:      prometheus.NewDesc("finproxy_queue_verdicts_total", "Verdicts written to the NFQUEUE.", nil, nil),
		enobufs:       prometheus.NewDesc("finproxy_queue_enobufs_total", "Receive overruns (ENOBUFS) the queue socket reported.", nil, nil),
		verdictErrors: prometheus.NewDesc("finproxy_queue_verdict_errors_total", "Verdicts that could not be written.", nil, nil),
		kernelDropped: prometheus.NewDesc("finproxy_queue_kernel_dropped_total", "Segments the kernel dropped because the queue was full.", nil, nil),
		userDropped:   prometheus.NewDesc("finproxy_queue_user_dropped_total", "Segments the kernel could not hand to finproxy's socket (its buffer was full).", nil, nil),
		waiting:       prometheus.NewDesc("finproxy_queue_waiting", "Segments in the kernel queue waiting for a verdict.", nil, nil),
		undecodable:   prometheus.NewDesc("finproxy_undecodable_total", "Queued packets that were not TCP segments (accepted).", nil, nil),
		replacements:  prometheus.NewDesc("finproxy_rule_set_replacements_total", "Rule sets put in place.", nil, nil),
	}
	m.reg.MustRegister(m, m.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// record observes a segment's verdict latency (segments finproxy made are not queued).
func (m *metrics) record(r *rules.Record) {
	if r.Injected || r.Time == 0 {
		return
	}
	m.latency.Observe(time.Duration(r.VerdictTime - r.Time).Seconds())
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.rule, m.received, m.verdicts, m.enobufs, m.verdictErrors,
		m.kernelDropped, m.userDropped, m.waiting, m.undecodable, m.replacements} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	c := m.s.snapshot()
	for _, r := range c.Rules {
		for _, o := range []struct {
			name string
			v    uint64
		}{{"matched", r.Matched}, {"passed", r.Passed}, {"dropped", r.Dropped}, {"delayed", r.Delayed},
			{"held", r.Held}, {"merged", r.Merged}, {"modified", r.Modified}, {"injected", r.Injected},
			{"panicked", r.Panicked}} {
			counter(m.rule, o.v, r.Rule, o.name)
		}
	}
	counter(m.received, c.Queue.Received)
	counter(m.verdicts, c.Queue.Verdicts)
	counter(m.enobufs, c.Queue.ENOBUFS)
	counter(m.verdictErrors, c.Queue.VerdictErrors)
	counter(m.kernelDropped, c.Queue.KernelDropped)
	counter(m.userDropped, c.Queue.UserDropped)
	ch <- prometheus.MustNewConstMetric(m.waiting, prometheus.GaugeValue, float64(c.Queue.Waiting))
	counter(m.undecodable, c.Undecodable)
	counter(m.replacements, m.s.o.Backend.Replacements())
}

// Register adds a collector to /metrics (serve's observation metrics).
func (s *Server) Register(c prometheus.Collector) error { return s.met.reg.Register(c) }
