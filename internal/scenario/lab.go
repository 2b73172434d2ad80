package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/junit"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/story"
	"github.com/finproxy/finproxy/verify"
	"github.com/finproxy/finproxy/viz"
)

// LabOptions configure `finproxy lab`: a scenario run Runs times against real
// applications, each run checked against the config's [expect] section.
type LabOptions struct {
	Config *config.Config
	// ConfigArg is what `finproxy run -c` is given (a path or a preset name).
	ConfigArg string
	Runs      int
	Finproxy  string
	// Dir keeps each run's event log and the applications' output (run-N/).
	Dir string
	// Port overrides the config's target port; Override its [lab] applications, ready
	// text, server lifetime and stop grace (config.Lab.With).
	Port     uint16
	Override config.LabOverrides
	// Hang, when set, bounds each run's client and the wait for its connections to be
	// over (Spec.Hang).
	Hang time.Duration
	// Procs, when set, registers every process group the lab starts (what a second
	// interrupt kills at once).
	Procs  *Procs
	Logger *slog.Logger
	// Progress, when set, is called after each run.
	Progress func(done, total, passed int, run *RunReport)
}

// LabReport is report.json.
type LabReport struct {
	Scenario    string   `json:"scenario"`
	Description string   `json:"description,omitempty"`
	Config      string   `json:"config"`
	Server      []string `json:"server"`
	Client      []string `json:"client"`
	// ServerLifetime is "run" (a server per run) or "lab" (one for all runs).
	ServerLifetime config.ServerLifetime `json:"server_lifetime"`
	// Namespaces are the lab's client, router and server network namespaces (removed
	// when the lab ends).
	Namespaces []string `json:"namespaces"`
	// Skipped are the config's expectations not checked, and why (the same for every run).
	Skipped []SkippedExpectation `json:"skipped,omitempty"`
	Started time.Time            `json:"started"`
	Ended   time.Time            `json:"ended"`
	Passed  int                  `json:"passed"`
	Failed  int                  `json:"failed"`
	Runs    []*RunReport         `json:"runs"`
}

// RunReport is one run in report.json.
type RunReport struct {
	Run        int      `json:"run"`
	Pass       bool     `json:"pass"`
	Failures   []string `json:"failures"`
	DurationMS float64  `json:"duration_ms"`
	ClientExit int      `json:"client_exit"`
	ServerExit int      `json:"server_exit"`
	// ClientStop and ServerStop say how the lab stopped an application still running
	// when the scenario was over or the run's time was up (its exit status is then the
	// signal's); absent when it exited by itself. ServerRunning: the server runs on for
	// the next runs (server_lifetime "lab") and has no exit status in this run.
	ClientStop    *Stop `json:"client_stopped_by_lab,omitempty"`
	ServerStop    *Stop `json:"server_stopped_by_lab,omitempty"`
	ServerRunning bool  `json:"server_running,omitempty"`
	// ClientOutput and ServerOutput are what the applications printed: their view of the
	// run (the built-in ones print a JSON line per connection with the bytes sent and
	// received and any error; socat -d -d its connections and errors). At most
	// maxAppOutput bytes of each are kept: the end is cut, with a note.
	ClientOutput string `json:"client_output,omitempty"`
	ServerOutput string `json:"server_output,omitempty"`
	// Kernel is what the two ends' kernels counted (PAWS rejections, challenge ACKs,
	// TIME_WAIT kills, resets, retransmissions): what the kernel did with the faults.
	Kernel      *KernelReport  `json:"kernel,omitempty"`
	Connections []ConnReport   `json:"connections"`
	Leaks       []observe.Leak `json:"leaks,omitempty"`
	// HeldSockets are sockets of the server's processes that the kernel closed (a reset,
	// a timeout) while no application closed them: file descriptor leaks.
	HeldSockets []HeldSocket        `json:"held_sockets,omitempty"`
	Counters    string              `json:"finproxy_summary,omitempty"`
	Warnings    []string            `json:"warnings,omitempty"`
	Observed    *observe.Report     `json:"-"`
	Records     []rules.Record      `json:"-"`
	Timeline    *observe.Connection `json:"-"`
	// Incarnations are the connections observed on Timeline's 4-tuple, Timeline first
	// (usually: it is the one with a handshake, seen first).
	Incarnations []*observe.Connection `json:"-"`
	// Expectations are the config's expectations one by one, with their outcome.
	Expectations []viz.Expectation `json:"expectations"`
}

// SkippedExpectation is an expectation of the config that a lab did not check.
type SkippedExpectation struct {
	Expectation string `json:"expectation"`
	Reason      string `json:"reason"`
}

// effectiveExpect returns the expectations that apply to a lab's applications: an exit
// expectation describes the application [lab] names, so it does not apply when
// --server or --client replaced that application, nor a server's when one server runs
// for all runs (it has no exit status per run).
func effectiveExpect(e *config.Expect, serverReplaced, clientReplaced bool, lifetime config.ServerLifetime) (*config.Expect, []SkippedExpectation) {
	if e == nil {
		return nil, nil
	}
	out := *e
	var skipped []SkippedExpectation
	drop := func(side string, se **config.SideExpect, why string) {
		if *se == nil || ((*se).Exit == nil && !(*se).ExitStopped) {
			return
		}
		cp := **se
		text := side + " " + verify.ExitText(&cp)
		cp.Exit, cp.ExitStopped = nil, false
		*se = &cp
		skipped = append(skipped, SkippedExpectation{Expectation: text, Reason: why})
	}
	switch {
	case serverReplaced:
		drop("server", &out.Server, "it describes the [lab] server; --server or --apps replaced it")
	case lifetime == config.ServerPerLab:
		drop("server", &out.Server, "one server runs for all runs (server_lifetime = \"lab\"): it has no exit status per run")
	}
	if clientReplaced {
		drop("client", &out.Client, "it describes the [lab] client; --client or --apps replaced it")
	}
	return &out, skipped
}

// stopText is a Stop for a failure message: "SIGTERM, exit status 0".
func stopText(s *Stop) string {
	if s == nil {
		return ""
	}
	return s.Signal + ", " + s.Status
}

// ConnReport is a connection of a run (one incarnation of the run's 4-tuple), as both
// sides went through it.
type ConnReport struct {
	Incarnation int        `json:"incarnation"`
	Client      SideReport `json:"client"`
	Server      SideReport `json:"server"`
}

// SideReport is one side of the connection: its states in order (kernel names, TIME_WAIT
// included), retransmissions with the state they happened in, resets, and the segments it
// sent that finproxy saw.
type SideReport struct {
	Addr           string               `json:"addr"`
	States         []string             `json:"states"`
	Timeline       []observe.StateEntry `json:"timeline"`
	Retransmits    []RetransmitReport   `json:"retransmits"`
	ResetsSent     []ResetReport        `json:"resets_sent"`
	ResetsReceived []ResetReport        `json:"resets_received"`
	Segments       []SegmentReport      `json:"segments"`
}

// RetransmitReport is a retransmission and the state it happened in.
type RetransmitReport struct {
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// ResetReport is a reset sent or received.
type ResetReport struct {
	State  string    `json:"state,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// SegmentReport is a segment of the event log.
type SegmentReport struct {
	From    string `json:"from"`
	Flags   string `json:"flags"`
	Seq     uint32 `json:"seq"`
	Ack     uint32 `json:"ack"`
	Len     int    `json:"len"`
	Verdict string `json:"verdict"`
	Rule    string `json:"rule"`
	TimeNS  int64  `json:"time_ns"`
	HeldNS  int64  `json:"held_ns"`
}

// RunLab builds a topology with the config's sysctls and runs the scenario o.Runs times.
func RunLab(ctx context.Context, o LabOptions) (*LabReport, error) {
	cfg := o.Config
	if cfg.Lab == nil {
		return nil, fmt.Errorf("%s: no [lab] section: name the server and client commands (see configs/*.toml)", cfg.File)
	}
	if o.Runs < 1 {
		o.Runs = 1
	}
	port := cfg.Target.Port
	if o.Port != 0 {
		port = o.Port
	}
	if port == 0 {
		return nil, fmt.Errorf("%s: the lab needs target.port (or --port)", cfg.File)
	}
	eff := cfg.Lab.With(o.Override)
	server, client, lifetime, grace := eff.Server, eff.Client, eff.ServerLifetime, eff.StopGrace
	expect, skipped := effectiveExpect(cfg.Expect, len(o.Override.Server) > 0, len(o.Override.Client) > 0, lifetime)
	o.Logger = orDefault(o.Logger)
	topo, err := lab.New(ctx, lab.Options{Prefix: lab.DefaultPrefix, Sysctls: cfg.Lab.Sysctls, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("build the lab: %w", err)
	}
	defer topo.Close()
	// Last (before the namespaces go): anything still running in them is the lab's.
	defer func() {
		for _, n := range sweep(topo, min(grace, time.Second), lab.RoleClient, lab.RoleRouter, lab.RoleServer) {
			o.Logger.Warn("lab: " + n)
		}
	}()

	rep := &LabReport{Scenario: cfg.Name, Description: cfg.Description, Config: o.ConfigArg,
		Server: server, Client: client, ServerLifetime: lifetime, Skipped: skipped, Started: time.Now(), Runs: []*RunReport{},
		Namespaces: []string{topo.Client, topo.Router, topo.Server}}
	o.Logger.Debug("lab", "namespaces", strings.Join(rep.Namespaces, ","))
	threshold := config.DefaultLeakThreshold
	if cfg.Expect != nil && cfg.Expect.LeakThreshold > 0 {
		threshold = cfg.Expect.LeakThreshold
	}
	ready := eff.Ready
	v6 := cfg.Lab.Family == config.FamilyIPv6
	spec := func(k int) Spec {
		return Spec{
			Config: o.ConfigArg, Port: port, Server: server, Client: client, ServerReady: ready,
			Finproxy: o.Finproxy, Dir: filepath.Join(o.Dir, fmt.Sprintf("run-%d", k)),
			Settle: cfg.Lab.Settle, Timeout: cfg.Lab.Timeout, Logger: o.Logger, Addr6: v6,
			Observe: true, LeakThreshold: threshold, StopGrace: grace, Procs: o.Procs, Hang: o.Hang,
		}
	}
	var shared *proc
	if lifetime == config.ServerPerLab {
		o.Logger.Debug("lab phase", "phase", "server", "lifetime", "lab")
		sctx, cancel := context.WithTimeout(ctx, cfg.Lab.Timeout)
		shared, err = StartServer(sctx, topo, spec(0))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the server for all runs: %w", err)
		}
		defer shared.Stop(grace)
	}
	for k := 1; k <= o.Runs && ctx.Err() == nil; k++ {
		start := time.Now()
		sp := spec(k)
		sp.shared = shared
		res, err := Run(ctx, topo, sp)
		if ctx.Err() != nil {
			// Interrupted: the run in progress was cut short, it did not fail; it is
			// not recorded (the error below says how many runs were done).
			break
		}
		run := &RunReport{Run: k, Failures: []string{}, Connections: []ConnReport{}, ClientExit: -1, ServerExit: -1}
		if err != nil {
			run.Failures = append(run.Failures, "harness: "+err.Error())
		} else {
			judge(run, expect, topo, port, v6, res)
		}
		run.Expectations = expectations(expect, run)
		for _, sk := range skipped {
			run.Expectations = append(run.Expectations, viz.Expectation{Text: sk.Expectation, Pass: true, Skipped: true, Detail: "not checked: " + sk.Reason})
		}
		run.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		run.Pass = len(run.Failures) == 0
		if run.Pass {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Runs = append(rep.Runs, run)
		if o.Progress != nil {
			o.Progress(k, o.Runs, rep.Passed, run)
		}
	}
	rep.Ended = time.Now()
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted after %d of %d runs: %w", len(rep.Runs), o.Runs, context.Cause(ctx))
	}
	return rep, nil
}

// exitCode is the exit status of a finished command, -1 when unknown.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// maxAppOutput bounds each application output kept in a report.
const maxAppOutput = 4096

// clip returns out cut to maxAppOutput bytes (at a line end when there is one).
func clip(out string) string {
	if len(out) <= maxAppOutput {
		return out
	}
	cut := out[:maxAppOutput]
	if i := strings.LastIndexByte(cut, '\n'); i > 0 {
		cut = cut[:i+1]
	}
	return cut + fmt.Sprintf("[finproxy: %d more bytes not kept]\n", len(out)-len(cut))
}

// judge fills run from the scenario's result and checks the expectations.
func judge(run *RunReport, expect *config.Expect, topo *lab.Topology, port uint16, v6 bool, res *Result) {
	run.ClientExit, run.ServerExit = exitCode(res.ClientErr), exitCode(res.ServerErr)
	if res.ServerRunning {
		run.ServerExit = -1
	}
	run.ClientStop, run.ServerStop, run.ServerRunning = res.ClientStop, res.ServerStop, res.ServerRunning
	run.ClientOutput, run.ServerOutput = clip(res.ClientOutput), clip(res.ServerOutput)
	run.Counters = res.Summary
	run.Kernel = res.Kernel
	run.Leaks = res.Leaks
	run.HeldSockets = res.HeldSockets
	run.Records = res.Records
	run.Observed = res.Observed
	run.Warnings = append(slices.Clip(res.ObserveWarnings), res.Leftovers...)
	if res.RunErr != nil {
		run.Failures = append(run.Failures, fmt.Sprintf("finproxy run: %v", res.RunErr))
	}
	serverAddr, clientAddr := topo.ServerAddr, topo.ClientAddr
	if v6 {
		serverAddr, clientAddr = topo.ServerAddr6, topo.ClientAddr6
	}
	// The connection of the run is the one finproxy saw open (its client port is in the
	// event log); without one, the first to the server with a handshake.
	client := netip.AddrPortFrom(clientAddr, 0)
	for _, r := range res.Records {
		if r.Server.Port() == port && r.Client.Addr() == clientAddr {
			client = r.Client
			break
		}
	}
	var conn *observe.Connection
	if res.Observed != nil {
		var n int
		conn, n = verify.PickConnection(*res.Observed, client, netip.AddrPortFrom(serverAddr, port))
		if n > 1 {
			run.Warnings = append(run.Warnings, fmt.Sprintf("%d connections from %s to the server were observed; judged the first with a handshake", n, client))
		}
	} else {
		run.Failures = append(run.Failures, "observer: nothing observed: "+strings.Join(res.ObserveWarnings, "; "))
	}
	run.Timeline = conn
	if conn != nil {
		run.Incarnations = incarnations(*res.Observed, conn)
		for _, c := range run.Incarnations {
			run.Connections = append(run.Connections, connReport(c, res.Records))
		}
	}
	if expect != nil {
		run.Failures = append(run.Failures, verify.Check(verifyInput(expect, run))...)
	}
}

// verifyInput is what verify.Check needs of a judged run, for the expectations e.
func verifyInput(e *config.Expect, run *RunReport) verify.Input {
	in := verify.Input{Expect: e, Conn: run.Timeline, Leaks: run.Leaks, Records: run.Records,
		ClientExit: run.ClientExit, ServerExit: run.ServerExit, Incarnations: run.Incarnations,
		ClientStop: stopText(run.ClientStop), ServerStop: stopText(run.ServerStop)}
	if run.Kernel != nil {
		in.ClientCounters, in.ServerCounters = orEmpty(run.Kernel.Client.Counters), orEmpty(run.Kernel.Server.Counters)
	}
	return in
}

func orEmpty(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

// incarnations returns the connections of rep on conn's 4-tuple, in the order of their
// incarnation numbers.
func incarnations(rep observe.Report, conn *observe.Connection) []*observe.Connection {
	var out []*observe.Connection
	for i := range rep.Connections {
		c := &rep.Connections[i]
		if c.Client.Addr == conn.Client.Addr && c.Server.Addr == conn.Server.Addr {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b *observe.Connection) int { return a.Incarnation - b.Incarnation })
	return out
}

func connReport(c *observe.Connection, recs []rules.Record) ConnReport {
	cr := ConnReport{Incarnation: c.Incarnation, Client: sideReport(&c.Client), Server: sideReport(&c.Server)}
	for _, r := range recs {
		if !story.Belongs(r, c) {
			continue
		}
		seg := SegmentReport{From: r.Side.String(), Flags: r.Flags.String(), Seq: r.Seq, Ack: r.Ack, Len: r.Len,
			Verdict: r.Verdict.String(), Rule: r.Rule, TimeNS: r.Time, HeldNS: r.HeldNS}
		if r.Side == rules.Server {
			cr.Server.Segments = append(cr.Server.Segments, seg)
		} else {
			cr.Client.Segments = append(cr.Client.Segments, seg)
		}
	}
	return cr
}

func sideReport(s *observe.Side) SideReport {
	sr := SideReport{Addr: s.Addr.String(), States: []string{}, Timeline: s.States, Retransmits: []RetransmitReport{},
		ResetsSent: []ResetReport{}, ResetsReceived: []ResetReport{}, Segments: []SegmentReport{}}
	if sr.Timeline == nil {
		sr.Timeline = []observe.StateEntry{}
	}
	for _, st := range s.States {
		sr.States = append(sr.States, st.State.String())
	}
	for _, r := range s.Retransmits {
		sr.Retransmits = append(sr.Retransmits, RetransmitReport{State: r.State.String(), At: r.At})
	}
	for _, r := range s.ResetsSent {
		sr.ResetsSent = append(sr.ResetsSent, ResetReport{State: r.State.String(), Reason: r.Reason, At: r.At})
	}
	for _, r := range s.ResetsReceived {
		sr.ResetsReceived = append(sr.ResetsReceived, ResetReport{State: r.State.String(), At: r.At})
	}
	return sr
}

// WriteReport writes dir/report.json, then the diagrams (run-N/ladder.svg) and
// dir/index.html.
func WriteReport(dir string, rep *LabReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return writeVisuals(dir, rep)
}

// WriteJUnit writes one test case per run.
func WriteJUnit(path string, rep *LabReport) error {
	s := junit.Suite{Name: "finproxy lab " + rep.Scenario, Time: rep.Ended.Sub(rep.Started).Seconds()}
	for _, r := range rep.Runs {
		c := junit.Case{Name: fmt.Sprintf("%s/run-%d", rep.Scenario, r.Run), Classname: "finproxy.lab." + rep.Scenario, Time: r.DurationMS / 1000}
		if !r.Pass {
			c.Failure = &junit.Failure{Message: r.Failures[0], Text: strings.Join(r.Failures, "\n")}
		}
		var out []string
		for _, sk := range rep.Skipped {
			out = append(out, fmt.Sprintf("expectation not checked: %s (%s)", sk.Expectation, sk.Reason))
		}
		if r.ServerStop != nil {
			out = append(out, "server stopped by the lab: "+stopText(r.ServerStop))
		}
		if r.ClientStop != nil {
			out = append(out, "client stopped by the lab: "+stopText(r.ClientStop))
		}
		c.SystemOut = strings.Join(out, "\n")
		s.Cases = append(s.Cases, c)
	}
	return junit.Write(path, s)
}
