package obsmetrics

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/observe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

type fakeSource struct {
	rep   observe.Report
	leaks []observe.Leak
}

func (f *fakeSource) Snapshot() observe.Report           { return f.rep }
func (f *fakeSource) Leaks(time.Duration) []observe.Leak { return f.leaks }

var (
	cli = netip.MustParseAddrPort("10.0.0.1:40000")
	srv = netip.MustParseAddrPort("10.0.0.2:8080")
	far = netip.MustParseAddrPort("10.0.0.3:9999")
)

func mkSide(addr netip.AddrPort, states ...observe.State) observe.Side {
	s := observe.Side{Addr: addr}
	for _, st := range states {
		s.States = append(s.States, observe.StateEntry{State: st})
	}
	return s
}

// Sockets by side and current state, retransmissions and resets by side, CLOSE_WAIT leaks
// by process (bounded), only for the connections in scope; the text passes promlint.
func TestCollector(t *testing.T) {
	src := &fakeSource{rep: observe.Report{Connections: []observe.Connection{
		{Client: mkSide(cli, observe.SynSent, observe.Established, observe.FinWait1, observe.FinWait2), Server: mkSide(srv, observe.SynRecv, observe.Established, observe.CloseWait)},
		{Client: mkSide(netip.MustParseAddrPort("10.0.0.1:40001"), observe.SynSent, observe.Close), Server: mkSide(srv, observe.SynRecv, observe.Close)},
		{Client: mkSide(netip.MustParseAddrPort("10.0.0.1:40002"), observe.Established), Server: mkSide(far, observe.Established)}, // out of scope
	}}}
	for i := range 20 {
		for range i + 1 {
			src.leaks = append(src.leaks, observe.Leak{Local: srv, Remote: cli, Age: observe.Duration(time.Duration(i) * time.Second),
				Owner: &observe.Process{Pid: 100 + i, Comm: "app"}})
		}
	}
	src.leaks = append(src.leaks, observe.Leak{Local: far, Remote: cli, Owner: &observe.Process{Pid: 1, Comm: "elsewhere"}})
	c := New(src, time.Second, func() observe.Filter { return observe.Filter{Ports: []uint16{8080}} })
	c.Count(observe.Retransmit{EventMeta: observe.EventMeta{Src: srv, Dst: cli}, State: observe.LastAck})
	c.Count(observe.Retransmit{EventMeta: observe.EventMeta{Src: srv, Dst: cli}, State: observe.LastAck})
	c.Count(observe.Retransmit{EventMeta: observe.EventMeta{Src: far, Dst: cli}, State: observe.LastAck})
	c.Count(observe.ResetSent{EventMeta: observe.EventMeta{Src: cli, Dst: srv}})
	c.Count(observe.ResetReceived{EventMeta: observe.EventMeta{Src: srv, Dst: cli}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"finproxy_observed_sockets{side=client,state=FIN_WAIT2}":          1,
		"finproxy_observed_sockets{side=server,state=CLOSE_WAIT}":         1,
		"finproxy_observed_retransmits_total{side=server,state=LAST_ACK}": 2,
		"finproxy_observed_resets_total{direction=received,side=server}":  1,
		"finproxy_observed_resets_total{direction=sent,side=client}":      1,
		"finproxy_close_wait_leak_oldest_seconds{comm=app,pid=119}":       19,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "finproxy_observed_sockets") && !strings.Contains(k, "FIN_WAIT2") && !strings.Contains(k, "CLOSE_WAIT") {
			t.Errorf("unexpected series %s (a closed or out-of-scope socket?)", k)
		}
	}
	for _, mf := range mfs {
		if mf.GetName() != "finproxy_close_wait_leaks" {
			continue
		}
		if n := len(mf.GetMetric()); n != MaxLeakSeries+1 {
			t.Errorf("%d leak series, want %d named and other", n, MaxLeakSeries)
		}
		var total float64
		labels := map[string]float64{}
		for _, m := range mf.GetMetric() {
			total += m.GetGauge().GetValue()
			labels[fmt.Sprint(m.GetLabel()[1].GetValue(), "/", m.GetLabel()[0].GetValue())] = m.GetGauge().GetValue()
		}
		// 1+2+...+20 leaks of port 8080; the 4 processes with the fewest are "other".
		if total != 210 || labels["119/app"] != 20 || labels["other/other"] != 1+2+3+4 || labels["1/elsewhere"] != 0 {
			t.Errorf("leaks: total %v, by pid/comm %v", total, labels)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}
