package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

type params struct {
	Reps       int      `json:"reps"`
	Duration   string   `json:"duration"`
	Smoke      bool     `json:"smoke"`
	HoldConns  int      `json:"hold_conns"`
	SimConns   int      `json:"sim_conns"`
	DelayConns int      `json:"delay_conns"`
	Delay      string   `json:"delay"`
	Variants   []string `json:"variants"`
	Queues     int      `json:"queues"`
	Nice       int      `json:"nice"`
}

// metrics are one variant's medians over the repetitions (0: not measured).
type metrics struct {
	BulkMBps  float64 `json:"bulk_mb_per_s"`
	ChurnCPS  float64 `json:"churn_conns_per_s"`
	RRP50us   float64 `json:"rr_p50_us"`
	RRP99us   float64 `json:"rr_p99_us"`
	ConnP50us float64 `json:"connect_p50_us"`
	ConnP99us float64 `json:"connect_p99_us"`
	// ChurnCPUus is the machine's busy CPU time (both CPUs, every process and the kernel)
	// per connection of the churn workload.
	ChurnCPUus float64 `json:"churn_cpu_per_conn_us,omitempty"`
	Reps       int     `json:"reps"`
}

// fpSummary are a finproxy variant's own figures over its runs.
type fpSummary struct {
	// Verdict latency in the comparison runs: medians over the runs of each run's
	// quantiles, the largest maximum, and the count of verdicts.
	VerdictP50us     float64 `json:"verdict_latency_p50_us"`
	VerdictP99us     float64 `json:"verdict_latency_p99_us"`
	VerdictMaxus     float64 `json:"verdict_latency_max_us"`
	DecisionP50us    float64 `json:"decision_latency_p50_us"` // to the verdict given
	DecisionP99us    float64 `json:"decision_latency_p99_us"`
	VerdictDoneP50us float64 `json:"verdict_done_latency_p50_us"` // to the write's return
	VerdictDoneP99us float64 `json:"verdict_done_latency_p99_us"`
	Verdicts         uint64  `json:"verdicts"`
	// Queue problems summed over every run of the variant (comparison, delay, memory).
	KernelDropped     uint64  `json:"kernel_dropped"`
	KernelUserDropped uint64  `json:"kernel_user_dropped"`
	ENOBUFS           uint64  `json:"enobufs"`
	VerdictErrors     uint64  `json:"verdict_errors"`
	ReadErrors        uint64  `json:"read_errors"`
	ChurnQueued       uint64  `json:"churn_queued"`       // segments queued during the churn workloads
	ChurnDropped      uint64  `json:"churn_dropped"`      // the kernel's dropped (queue full) during them
	ChurnUserDropped  uint64  `json:"churn_user_dropped"` // and user_dropped (socket full)
	RSSAfterChurnMiB  float64 `json:"rss_after_churn_mib"`
	// RSS10kMiB is the RSS with the memory part's connections open (10k by default);
	// CloseDrops what the kernel queue dropped (full queue, full socket) while they all
	// closed at once.
	RSS10kMiB         float64 `json:"rss_10k_connections_mib"`
	CloseDrops        *uint64 `json:"queue_drops_closing_10k"`
	MallocsPerSegment float64 `json:"mallocs_per_segment"` // the whole process's, over its comparison runs
	// Batched verdicts (every run of the variant): accepts written Batched at a time in
	// Batches writes, of Written verdicts in all.
	// finproxy's own CPU time in the churn runs, per queued segment and per connection
	// (medians over the runs), and its share of the machine's busy time.
	ChurnCPUPerSegmentUS float64 `json:"churn_cpu_per_segment_us"`
	ChurnCPUPerConnUS    float64 `json:"churn_cpu_per_conn_us"`
	ChurnCPUShare        float64 `json:"churn_cpu_share"`
	Batches              uint64  `json:"verdict_batches"`
	Batched              uint64  `json:"verdicts_batched"`
	Written              uint64  `json:"verdicts_written"`
}

type target struct {
	Variant string `json:"variant"`
	Name    string `json:"name"`
	Want    string `json:"target"`
	Value   string `json:"measured"`
	Pass    *bool  `json:"pass"` // null: not measured
	Note    string `json:"note,omitempty"`
}

type report struct {
	Meta     machineInfo             `json:"machine"`
	Params   params                  `json:"params"`
	Notes    []string                `json:"notes,omitempty"`
	Runs     []variantRun            `json:"runs"`
	Medians  map[string]metrics      `json:"medians"`
	Ratios   map[string]float64      `json:"ratios"` // "<workload>_<variant>_<other>"
	Finproxy map[string]*fpSummary   `json:"finproxy"`
	Delay    map[string]*delayResult `json:"delay"`
	Hold     map[string]*holdResult  `json:"hold"`
	Sim      *simResult              `json:"engine_churn"`
	Targets  []target                `json:"targets"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

const mib = 1 << 20

// fpVariants are the finproxy variants measured, in display order.
func (r *report) fpVariants() []string {
	var out []string
	for _, v := range allVariants {
		if strings.HasPrefix(v, "finproxy") && slices.Contains(r.Params.Variants, v) {
			out = append(out, v)
		}
	}
	return out
}

func (r *report) summarize() {
	r.Medians = map[string]metrics{}
	for _, v := range r.Params.Variants {
		var bulk, churn, p50, p99, c50, c99, ccpu []float64
		reps := 0
		for _, run := range r.Runs {
			if run.Variant != v {
				continue
			}
			reps++
			if run.Bulk != nil {
				bulk = append(bulk, run.Bulk.MBps)
			}
			if run.Churn != nil && run.ChurnCPU != nil && run.Churn.ServerConns > 0 {
				ccpu = append(ccpu, run.ChurnCPU.Busy*1e6/float64(run.Churn.ServerConns))
			}
			if run.Churn != nil {
				churn = append(churn, run.Churn.ConnsPS)
				c50 = append(c50, us(run.Churn.P50))
				c99 = append(c99, us(run.Churn.P99))
			}
			if run.RR != nil {
				p50 = append(p50, us(run.RR.P50))
				p99 = append(p99, us(run.RR.P99))
			}
		}
		if reps > 0 {
			r.Medians[v] = metrics{BulkMBps: median(bulk), ChurnCPS: median(churn), RRP50us: median(p50), RRP99us: median(p99),
				ConnP50us: median(c50), ConnP99us: median(c99), ChurnCPUus: median(ccpu), Reps: reps}
		}
	}
	r.Ratios = map[string]float64{}
	for _, fv := range r.fpVariants() {
		fp := r.Medians[fv]
		for _, other := range []string{"direct", "toxiproxy"} {
			o, ok := r.Medians[other]
			if !ok {
				continue
			}
			for _, m := range []struct {
				name string
				a, b float64
			}{{"bulk", fp.BulkMBps, o.BulkMBps}, {"churn", fp.ChurnCPS, o.ChurnCPS}, {"rr_p50", fp.RRP50us, o.RRP50us},
				{"rr_p99", fp.RRP99us, o.RRP99us}, {"connect_p50", fp.ConnP50us, o.ConnP50us}, {"connect_p99", fp.ConnP99us, o.ConnP99us}, {"churn_cpu", fp.ChurnCPUus, o.ChurnCPUus}} {
				if m.a > 0 && m.b > 0 {
					r.Ratios[m.name+"_"+fv+"_"+other] = m.a / m.b
				}
			}
		}
	}

	r.Finproxy = map[string]*fpSummary{}
	for _, fv := range r.fpVariants() {
		s := &fpSummary{}
		r.Finproxy[fv] = s
		var vp50, vp99, dp50, dp99, cp50, cp99, rss, segCPU, connCPU, share []float64
		var mallocs, received uint64
		addQueue := func(p *proxyResult) {
			if p == nil {
				return
			}
			if p.Kernel != nil {
				s.KernelDropped += uint64(p.Kernel.Dropped)
				s.KernelUserDropped += uint64(p.Kernel.UserDropped)
			}
			s.ENOBUFS += p.Queue.ENOBUFS
			s.VerdictErrors += p.Queue.VerdictErrors
			s.ReadErrors += p.Queue.ReadErrors
			s.Batches += p.Queue.Batches
			s.Batched += p.Queue.Batched
			s.Written += p.Queue.Verdicts
		}
		for _, run := range r.Runs {
			if run.Variant != fv {
				continue
			}
			if p := run.Proxy; p != nil {
				if l := p.Queue.VerdictLatency; l.Count > 0 {
					vp50 = append(vp50, us(l.P50))
					vp99 = append(vp99, us(l.P99))
					s.VerdictMaxus = max(s.VerdictMaxus, us(l.Max))
					s.Verdicts += l.Count
				}
				if l := p.Queue.VerdictDoneLatency; l.Count > 0 {
					dp50 = append(dp50, us(l.P50))
					dp99 = append(dp99, us(l.P99))
				}
				if l := p.Queue.DecisionLatency; l.Count > 0 {
					cp50 = append(cp50, us(l.P50))
					cp99 = append(cp99, us(l.P99))
				}
				mallocs += p.Mallocs
				received += p.Queue.Received
			}
			addQueue(run.Proxy)
			if c, q := run.ChurnCPU, run.ChurnQueue; c != nil && q != nil && q.Queued > 0 && run.Churn != nil && run.Churn.ServerConns > 0 && c.Busy > 0 {
				segCPU = append(segCPU, c.Finproxy*1e6/float64(q.Queued))
				connCPU = append(connCPU, c.Finproxy*1e6/float64(run.Churn.ServerConns))
				share = append(share, c.Finproxy/c.Busy)
			}
			if q := run.ChurnQueue; q != nil {
				s.ChurnQueued += uint64(q.Queued)
				s.ChurnDropped += uint64(q.Dropped)
				s.ChurnUserDropped += uint64(q.UserDropped)
			}
			if m := run.MemAfterRun; m != nil {
				rss = append(rss, float64(m.RSS)/mib)
			}
		}
		if d := r.Delay[fv]; d != nil {
			addQueue(d.Proxy)
		}
		if h := r.Hold[fv]; h != nil {
			addQueue(h.Proxy)
			if h.Held != nil {
				s.RSS10kMiB = float64(h.Held.RSS) / mib
			}
			if q := h.CloseQueue; q != nil {
				d := uint64(q.Dropped + q.UserDropped)
				s.CloseDrops = &d
			}
		}
		s.VerdictP50us, s.VerdictP99us = median(vp50), median(vp99)
		s.VerdictDoneP50us, s.VerdictDoneP99us = median(dp50), median(dp99)
		s.DecisionP50us, s.DecisionP99us = median(cp50), median(cp99)
		s.RSSAfterChurnMiB = median(rss)
		s.ChurnCPUPerSegmentUS, s.ChurnCPUPerConnUS, s.ChurnCPUShare = median(segCPU), median(connCPU), median(share)
		if received > 0 {
			s.MallocsPerSegment = float64(mallocs) / float64(received)
		}
	}
	r.targets()
}

func passed(ok bool) *bool { return &ok }

// targetNames are the targets in order, for the table (issue 12's contract).
var targetNames = []struct{ name, want string }{
	{"churn, finproxy-teardown / direct", "≥ 0.90"},
	{"connect p50, finproxy-teardown / direct", "≤ 1.2"},
	{"churn, finproxy-teardown / toxiproxy", "≥ 3"},
	{"churn, finproxy-handshake / direct", "≥ 0.50"},
	{"connect p50, finproxy-handshake / direct", "≤ 2.5"},
	{"bulk / direct", "≥ 0.95"},
	{"queue drops, 10k connections closing at once", "0"},
	{"RSS at 10k connections, observation on", "≤ 64 MiB"},
	{"delay 10 ms, p99 error", "≤ 1 ms"},
}

// targets judges every target a variant is concerned by: the churn and connect ones the
// variant they name (and its -noobs twin, for reference), bulk and queue drops every
// finproxy variant, RSS those that observe, the delay the handshake ones (its rule holds
// the SYN).
func (r *report) targets() {
	for _, fv := range r.fpVariants() {
		add := func(i int, value string, pass *bool, note string) {
			t := targetNames[i]
			r.Targets = append(r.Targets, target{Variant: fv, Name: t.name, Want: t.want, Value: value, Pass: pass, Note: note})
		}
		ratio := func(i int, key string, ok func(float64) bool) {
			if v, found := r.Ratios[key]; found {
				add(i, fmt.Sprintf("%.2f×", v), passed(ok(v)), "")
			} else {
				add(i, "not measured", nil, "")
			}
		}
		atLeast := func(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
		atMost := func(m float64) func(float64) bool { return func(v float64) bool { return v <= m } }
		if strings.HasPrefix(fv, "finproxy-teardown") {
			ratio(0, "churn_"+fv+"_direct", atLeast(0.90))
			ratio(1, "connect_p50_"+fv+"_direct", atMost(1.2))
			ratio(2, "churn_"+fv+"_toxiproxy", atLeast(3))
		} else {
			ratio(3, "churn_"+fv+"_direct", atLeast(0.50))
			ratio(4, "connect_p50_"+fv+"_direct", atMost(2.5))
		}
		ratio(5, "bulk_"+fv+"_direct", atLeast(0.95))
		s := r.Finproxy[fv]
		if s.CloseDrops != nil {
			add(6, fmt.Sprintf("%d", *s.CloseDrops), passed(*s.CloseDrops == 0), "")
		} else {
			add(6, "not measured", nil, "")
		}
		if observes(fv) {
			if h := r.Hold[fv]; h != nil && h.Held != nil {
				note := ""
				if h.Conns != 10000 {
					note = fmt.Sprintf("%d connections", h.Conns)
				}
				add(7, fmt.Sprintf("%.1f MiB", s.RSS10kMiB), passed(s.RSS10kMiB <= 64), note)
			} else {
				add(7, "not measured", nil, "")
			}
		}
		if strings.HasPrefix(fv, "finproxy-handshake") {
			if d := r.Delay[fv]; d != nil && d.Samples > 0 {
				note := ""
				if d.Dial != nil && d.Dial.Seconds > 0 {
					note = fmt.Sprintf("at %.0f connections/s", float64(d.Samples)/d.Dial.Seconds)
				}
				add(8, fmt.Sprintf("%.0f µs", us(d.ErrP99)), passed(d.ErrP99 <= time.Millisecond), note)
			} else {
				add(8, "not measured", nil, "")
			}
		}
	}
}

func (r *report) target(fv string, i int) *target {
	for k := range r.Targets {
		t := &r.Targets[k]
		if t.Variant == fv && t.Name == targetNames[i].name && t.Want == targetNames[i].want {
			return t
		}
	}
	return nil
}

func (r *report) print(w io.Writer) {
	m := r.Meta
	fmt.Fprintf(w, "\nfinproxy benchmark, %s, host %s, Linux %s, %d × %s, %s\n", m.Date, m.Host, m.Kernel, m.CPUs, m.CPU, m.Go)
	p := r.Params
	mode := ""
	if p.Smoke {
		mode = "\nSMOKE MODE: tiny durations and counts, the numbers mean nothing."
	}
	fmt.Fprintf(w, "load average %s at start, %s at end; %d repetition(s) of %s per workload, variants alternating; finproxy on %d queue(s) at nice %d; %.0f s in all.%s\n",
		m.LoadStart, m.LoadEnd, p.Reps, p.Duration, p.Queues, p.Nice, m.Seconds, mode)
	fmt.Fprintln(w, `Like with like: the same client and server programs in the same client, router and server
namespaces (veths, offloads off) for every variant. direct: the router forwards. The finproxy
variants: the router forwards through finproxy's FORWARD hook, with observation of both ends on
as `+"`finproxy run`"+` does by default (-noobs: --no-observe). finproxy-teardown (TD): the
rules of lost-final-ack and lost-fin, passing what they match: FINs and the ACK of the server's
FIN are queued, the handshake is not. finproxy-handshake (HS): rules on SYN, FIN and RST that pass
them: every SYN and SYN|ACK is queued too. toxiproxy: the client connects to the router, where
Toxiproxy (no toxics) opens a second connection to the server. Medians over the repetitions;
ratios are finproxy / other (for latencies, lower is better).`)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "NOTE: %s\n", n)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var cols []string
	for _, c := range allVariants {
		if _, ok := r.Medians[c]; ok {
			cols = append(cols, c)
		}
	}
	fps := r.fpVariants()
	hdr := "WORKLOAD"
	for _, c := range cols {
		hdr += "\t" + strings.ToUpper(c)
	}
	abbrev := map[string]string{"finproxy-teardown": "TD", "finproxy-handshake": "HS",
		"finproxy-teardown-noobs": "TD-NOOBS", "finproxy-handshake-noobs": "HS-NOOBS"}
	for _, fv := range fps {
		hdr += "\t" + abbrev[fv] + "/DIRECT\t" + abbrev[fv] + "/TOXI"
	}
	fmt.Fprintln(tw, hdr+"\t")
	row := func(name string, get func(metrics) float64, prec int, key string) {
		line := name
		for _, c := range cols {
			if v := get(r.Medians[c]); v > 0 {
				line += "\t" + fmt.Sprintf("%.*f", prec, v)
			} else {
				line += "\t-"
			}
		}
		for _, fv := range fps {
			for _, o := range []string{"direct", "toxiproxy"} {
				if v, ok := r.Ratios[key+"_"+fv+"_"+o]; ok {
					line += fmt.Sprintf("\t%.2f", v)
				} else {
					line += "\t-"
				}
			}
		}
		fmt.Fprintln(tw, line+"\t")
	}
	row("bulk transfer, MB/s", func(m metrics) float64 { return m.BulkMBps }, 0, "bulk")
	row("connection churn, conn/s", func(m metrics) float64 { return m.ChurnCPS }, 0, "churn")
	row("request latency p50, µs", func(m metrics) float64 { return m.RRP50us }, 1, "rr_p50")
	row("request latency p99, µs", func(m metrics) float64 { return m.RRP99us }, 1, "rr_p99")
	row("connect time p50 (churn), µs", func(m metrics) float64 { return m.ConnP50us }, 0, "connect_p50")
	row("connect time p99 (churn), µs", func(m metrics) float64 { return m.ConnP99us }, 0, "connect_p99")
	row("CPU per connection (churn, machine), µs", func(m metrics) float64 { return m.ChurnCPUus }, 0, "churn_cpu")
	tw.Flush()
	fmt.Fprintln(w)

	// finproxy's own figures, one column per finproxy variant.
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr = "FINPROXY ONLY"
	for _, fv := range fps {
		hdr += "\t" + strings.ToUpper(fv)
	}
	fmt.Fprintln(tw, hdr+"\t")
	line := func(name string, f func(fv string) string) {
		l := name
		for _, fv := range fps {
			l += "\t" + f(fv)
		}
		fmt.Fprintln(tw, l+"\t")
	}
	line("verdict latency p50 / p99 / max, µs", func(fv string) string {
		s := r.Finproxy[fv]
		return fmt.Sprintf("%.1f / %.1f / %.0f (%d verdicts)", s.VerdictP50us, s.VerdictP99us, s.VerdictMaxus, s.Verdicts)
	})
	line("  to the verdict write's return p50 / p99, µs", func(fv string) string {
		s := r.Finproxy[fv]
		return fmt.Sprintf("%.1f / %.1f", s.VerdictDoneP50us, s.VerdictDoneP99us)
	})
	line("  verdict given (finproxy's decision) p50 / p99, µs", func(fv string) string {
		s := r.Finproxy[fv]
		return fmt.Sprintf("%.1f / %.1f", s.DecisionP50us, s.DecisionP99us)
	})
	line(fmt.Sprintf("delay %s: |observed - configured| p50 / p99 / max, µs", p.Delay), func(fv string) string {
		d := r.Delay[fv]
		if d == nil || d.Samples == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f / %.0f / %.0f (%d segments)", us(d.ErrP50), us(d.ErrP99), us(d.ErrMax), d.Samples)
	})
	line("churn runs: queued, dropped, user_dropped", func(fv string) string {
		s := r.Finproxy[fv]
		return fmt.Sprintf("%d, %d, %d", s.ChurnQueued, s.ChurnDropped, s.ChurnUserDropped)
	})
	line("all runs: dropped, user_dropped, ENOBUFS; fail-open", func(fv string) string {
		s := r.Finproxy[fv]
		return fmt.Sprintf("%d, %d, %d; off", s.KernelDropped, s.KernelUserDropped, s.ENOBUFS)
	})
	line(fmt.Sprintf("RSS idle / %d connections open / closed, MiB", p.HoldConns), func(fv string) string {
		h := r.Hold[fv]
		if h == nil || h.Held == nil {
			return "-"
		}
		mi := func(m *memInfo) string {
			if m == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f", float64(m.RSS)/mib)
		}
		return fmt.Sprintf("%s / %s / %s (opened in %.1f s)", mi(h.Idle), mi(h.Held), mi(h.Closed), h.OpenSecond)
	})
	line(fmt.Sprintf("queue drops while the %d connections close at once", p.HoldConns), func(fv string) string {
		if d := r.Finproxy[fv].CloseDrops; d != nil {
			return fmt.Sprint(*d)
		}
		return "-"
	})
	line("RSS after a churn run, MiB", func(fv string) string { return fmt.Sprintf("%.1f", r.Finproxy[fv].RSSAfterChurnMiB) })
	line("heap allocations per queued segment (whole process)", func(fv string) string {
		return fmt.Sprintf("%.2f", r.Finproxy[fv].MallocsPerSegment)
	})
	line("churn: finproxy's CPU per queued segment / per connection, µs; share of the machine's", func(fv string) string {
		s := r.Finproxy[fv]
		if s.ChurnCPUPerSegmentUS == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f / %.0f; %.0f%%", s.ChurnCPUPerSegmentUS, s.ChurnCPUPerConnUS, 100*s.ChurnCPUShare)
	})
	line("verdicts written in batches: of all / writes", func(fv string) string {
		s := r.Finproxy[fv]
		if s.Written == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%% of %d / %d", 100*float64(s.Batched)/float64(s.Written), s.Written, s.Batches)
	})
	tw.Flush()
	if sm := r.Sim; sm != nil && len(sm.Points) > 0 {
		var pts []string
		for i, pt := range sm.Points {
			if pt.Conns == 10000 || i == 1 || pt.Conns == sm.Conns/2 || i == len(sm.Points)-1 {
				pts = append(pts, fmt.Sprintf("%dk: %.1f (%.1f)", pt.Conns/1000, float64(pt.RSS)/mib, float64(pt.HeapLive)/mib))
			}
		}
		fmt.Fprintf(w, "engine in-process over %dk connections (synthetic segments; table capped at %d): RSS (live heap) MiB %s;\n  %.0f ns and %.2f allocations per segment\n",
			sm.Conns/1000, sm.Points[len(sm.Points)-1].Tracked, strings.Join(pts, ", "), sm.NsPerSeg, sm.AllocsPerSg)
	} else if sm != nil && sm.Err != "" {
		fmt.Fprintf(w, "engine in-process: failed: %s\n", sm.Err)
	}
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr = "TARGET"
	for _, fv := range fps {
		hdr += "\t" + strings.ToUpper(fv)
	}
	fmt.Fprintln(tw, hdr+"\t")
	for i, t := range targetNames {
		l := t.name + " " + t.want
		for _, fv := range fps {
			if tg := r.target(fv, i); tg != nil {
				l += "\t" + tg.Value + " " + passMark(tg.Pass)
			} else {
				l += "\t-"
			}
		}
		fmt.Fprintln(tw, l+"\t")
	}
	tw.Flush()
	for _, fv := range fps {
		met, n := 0, 0
		for _, t := range r.Targets {
			if t.Variant == fv {
				n++
				if t.Pass != nil && *t.Pass {
					met++
				}
			}
		}
		fmt.Fprintf(w, "%s: %d of %d targets met\n", fv, met, n)
	}
	fmt.Fprintln(w, `verdict latency: in finproxy, from the reader's receipt of a queued segment to the write of
its verdict (the kernel gives no timestamp: time in the kernel queue before the read is not in
it), the wait for the verdict writer included; "verdict given" stops when the engine decided,
"to the write's return" adds the reinjection the kernel runs within that write.
delay: for segments a delay rule held, the time from receipt to the verdict write's return,
minus the configured delay.`)
	for _, run := range r.Runs {
		if run.Err != "" {
			fmt.Fprintf(w, "error: %s rep %d: %s\n", run.Variant, run.Rep, run.Err)
		}
	}
	for _, fv := range fps {
		if d := r.Delay[fv]; d != nil && d.Err != "" {
			fmt.Fprintf(w, "error: %s delay: %s\n", fv, d.Err)
		}
		if h := r.Hold[fv]; h != nil && h.Err != "" {
			fmt.Fprintf(w, "error: %s memory: %s\n", fv, h.Err)
		}
	}
	if r.Sim != nil && r.Sim.Err != "" {
		fmt.Fprintf(w, "error: engine churn: %s\n", r.Sim.Err)
	}
}

func passMark(p *bool) string {
	switch {
	case p == nil:
		return "n/a"
	case *p:
		return "PASS"
	}
	return "FAIL"
}
