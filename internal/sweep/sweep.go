package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/observe"
)

// Kinds of findings.
const (
	// KindLeak: a socket an application holds and never closes: in CLOSE_WAIT past the
	// threshold, or closed by the kernel (a reset) while its file descriptor stays open.
	KindLeak = "leak"
	// KindHang: an application still running past the bound, or a connection one side
	// keeps ESTABLISHED after the other side is gone.
	KindHang = "hang"
	// KindLinger: a socket no application holds (an orphan) still in FIN_WAIT2, LAST_ACK
	// or CLOSING past the bound, or one the kernel gave up on: the kernel's business,
	// bounded by its timers (tcp_fin_timeout, tcp_orphan_retries).
	KindLinger = "linger"
	// KindError: an application exited with a non-zero status.
	KindError = "error"
)

// Kinds are the kinds of findings, most serious first.
var Kinds = []string{KindLeak, KindHang, KindLinger, KindError}

// Finding is one thing a run showed of the applications.
type Finding struct {
	Kind string `json:"kind"`
	// Side is "client" or "server".
	Side string `json:"side"`
	// Key groups findings over runs ("server CLOSE_WAIT"), Text says it whole.
	Key  string `json:"key"`
	Text string `json:"text"`
	// Process holds the socket (leaks), when known.
	Process *observe.Process `json:"process,omitempty"`
	// For is how long the socket was in its state, or the application ran.
	ForMS float64 `json:"for_ms,omitempty"`
}

// Options configure a sweep.
type Options struct {
	Faults []Fault
	// Apps are the server and client (required), the server's ready text, its lifetime
	// and the stop grace, as lab's flags give them.
	Apps config.LabOverrides
	Port uint16
	Runs int
	// CloseWait is the leak threshold; Hang bounds the client's run and the wait for the
	// connections to be over after it (see scenario.Spec.Hang).
	CloseWait, Hang time.Duration
	Finproxy        string
	// Dir keeps each fault's configs and runs (DIR/FAULT/run-N/).
	Dir    string
	Procs  *scenario.Procs
	Logger *slog.Logger
	// Progress, when set, is called after each run.
	Progress func(Progress)
}

// Progress is where a sweep stands.
type Progress struct {
	Fault, Faults int
	Name          string
	Run, Runs     int
	// Findings counts the runs so far with a finding of each kind.
	Findings map[string]int
	Last     *RunResult
}

// Report is a sweep's result: report.json.
type Report struct {
	Server    []string       `json:"server"`
	Client    []string       `json:"client"`
	Port      uint16         `json:"port"`
	Runs      int            `json:"runs_per_fault"`
	CloseWait time.Duration  `json:"close_wait_ns"`
	Hang      time.Duration  `json:"hang_ns"`
	Started   time.Time      `json:"started"`
	Ended     time.Time      `json:"ended"`
	Faults    []*FaultResult `json:"faults"`
	// Interrupted is set when the sweep was stopped before its end: the faults and runs
	// listed are those done.
	Interrupted bool `json:"interrupted,omitempty"`
}

// FaultResult is what the runs of one fault showed.
type FaultResult struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Origin      string `json:"origin"`
	// Config is the fault's config file, relative to the report's directory.
	Config string       `json:"config"`
	Runs   []*RunResult `json:"runs"`
	// Summary counts, per finding key, the runs that showed it, in the order of Kinds.
	Summary []Count `json:"summary"`
	// Lab is the lab's report of the runs (not in report.json: each run's files are).
	Lab *scenario.LabReport `json:"-"`
}

// Count is a finding and the runs that showed it.
type Count struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
	Runs int    `json:"runs"`
	// Example is the first run that showed it.
	Example int `json:"example_run"`
	// Process is the process of that run's finding, when known.
	Process *observe.Process `json:"process,omitempty"`
}

// RunResult is one run of a fault.
type RunResult struct {
	Run      int       `json:"run"`
	Findings []Finding `json:"findings"`
	// Harness is set when the run could not be made (the server did not start, ...).
	Harness    string  `json:"harness_error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	ClientExit int     `json:"client_exit"`
	// Dir is the run's directory, relative to the report's (event log, capture, ladder).
	Dir string `json:"dir"`
}

// Has reports whether the fault showed a finding of one of kinds in any run.
func (f *FaultResult) Has(kinds ...string) bool {
	for _, c := range f.Summary {
		if slices.Contains(kinds, c.Kind) {
			return true
		}
	}
	return false
}

// Run runs every fault Runs times against the applications and classifies what was
// observed. It returns the report so far, with an error, when ctx ends first.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs < 1 {
		o.Runs = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	rep := &Report{Server: o.Apps.Server, Client: o.Apps.Client, Port: o.Port, Runs: o.Runs, CloseWait: o.CloseWait, Hang: o.Hang,
		Started: time.Now(), Faults: []*FaultResult{}}
	counts := map[string]int{}
	for k, f := range o.Faults {
		if ctx.Err() != nil {
			break
		}
		fr, err := runFault(ctx, o, k, f, counts)
		if fr != nil && (len(fr.Runs) > 0 || ctx.Err() == nil) {
			rep.Faults = append(rep.Faults, fr)
		}
		if err != nil && ctx.Err() == nil {
			return rep, fmt.Errorf("fault %s: %w", f.Name, err)
		}
	}
	rep.Ended = time.Now()
	if ctx.Err() != nil {
		rep.Interrupted = true
		return rep, fmt.Errorf("interrupted after %d of %d faults: %w", len(rep.Faults), len(o.Faults), context.Cause(ctx))
	}
	return rep, nil
}

// runFault runs one fault in a lab of its own (its sysctls are the fault's).
func runFault(ctx context.Context, o Options, k int, f Fault, counts map[string]int) (*FaultResult, error) {
	dir := filepath.Join(o.Dir, f.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "fault.toml")
	if err := os.WriteFile(cfgPath, f.TOML, 0o644); err != nil {
		return nil, err
	}
	cfg := *f.Config
	lab := config.Lab{Family: config.FamilyIPv4, Settle: config.DefaultLabSettle, Timeout: 2*o.Hang + 15*time.Second}.With(o.Apps)
	if f.Config.Lab != nil {
		lab.Sysctls = f.Config.Lab.Sysctls
		lab.Settle = f.Config.Lab.Settle
		lab.Family = f.Config.Lab.Family
	}
	cfg.Lab = &lab
	cfg.Expect = &config.Expect{LeakThreshold: o.CloseWait}
	fr := &FaultResult{Name: f.Name, Description: f.Description, Origin: f.Origin,
		Config: filepath.Join(f.Name, "fault.toml"), Runs: []*RunResult{}}
	labRep, err := scenario.RunLab(ctx, scenario.LabOptions{
		Config: &cfg, ConfigArg: cfgPath, Runs: o.Runs, Finproxy: o.Finproxy, Dir: dir, Port: o.Port,
		Override: config.LabOverrides{Server: o.Apps.Server, Client: o.Apps.Client}, Procs: o.Procs, Logger: o.Logger, Hang: o.Hang,
		Progress: func(done, total, passed int, run *scenario.RunReport) {
			rr := classify(run, o.Hang)
			rr.Dir = filepath.Join(f.Name, fmt.Sprintf("run-%d", run.Run))
			fr.Runs = append(fr.Runs, rr)
			seen := map[string]bool{}
			for _, fd := range rr.Findings {
				if !seen[fd.Kind] {
					seen[fd.Kind] = true
					counts[fd.Kind]++
				}
			}
			if o.Progress != nil {
				o.Progress(Progress{Fault: k + 1, Faults: len(o.Faults), Name: f.Name, Run: done, Runs: total,
					Findings: counts, Last: rr})
			}
		},
	})
	fr.Lab = labRep
	fr.Summary = summarize(fr.Runs)
	if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return fr, err
	}
	return fr, nil
}

// summarize counts the runs of each finding key, in the order of Kinds then of first
// appearance.
func summarize(runs []*RunResult) []Count {
	var out []Count
	for _, r := range runs {
		seen := map[string]bool{}
		for _, f := range r.Findings {
			if seen[f.Key] {
				continue
			}
			seen[f.Key] = true
			i := slices.IndexFunc(out, func(c Count) bool { return c.Key == f.Key })
			if i < 0 {
				out = append(out, Count{Kind: f.Kind, Key: f.Key, Example: r.Run, Process: f.Process})
				i = len(out) - 1
			}
			out[i].Runs++
		}
	}
	slices.SortStableFunc(out, func(a, b Count) int { return slices.Index(Kinds, a.Kind) - slices.Index(Kinds, b.Kind) })
	return out
}

// classify reads one run of the lab as findings about the applications.
func classify(run *scenario.RunReport, hang time.Duration) *RunResult {
	rr := &RunResult{Run: run.Run, Findings: []Finding{}, DurationMS: run.DurationMS, ClientExit: run.ClientExit}
	add := func(f Finding) { rr.Findings = append(rr.Findings, f) }
	for _, fl := range run.Failures {
		if strings.HasPrefix(fl, "harness: ") {
			rr.Harness = strings.TrimPrefix(fl, "harness: ")
		}
	}
	var conn *observe.Connection = run.Timeline
	sideOf := func(addr string) string {
		if conn != nil && addr == conn.Client.Addr.String() {
			return "client"
		}
		return "server"
	}

	// Leaks: CLOSE_WAIT past the threshold (the leak detector), sockets closed by the
	// kernel and never by their application.
	for _, l := range run.Leaks {
		side := sideOf(l.Local.String())
		text := fmt.Sprintf("%s socket %v held in CLOSE_WAIT for %v", side, l.Local, time.Duration(l.Age).Round(time.Millisecond))
		if l.Owner != nil {
			text += fmt.Sprintf(" by %s (pid %d)", l.Owner.Comm, l.Owner.Pid)
		}
		add(Finding{Kind: KindLeak, Side: side, Key: side + " CLOSE_WAIT leak", Text: text, Process: l.Owner,
			ForMS: float64(time.Duration(l.Age).Microseconds()) / 1000})
	}
	for _, h := range run.HeldSockets {
		p := &observe.Process{Pid: h.Pid, Comm: h.Comm}
		add(Finding{Kind: KindLeak, Side: "server", Key: "server socket never closed after the kernel closed it",
			Text: fmt.Sprintf("%s (pid %d) still holds socket %d, which the kernel closed (a reset or a timeout): its file descriptor was never closed",
				h.Comm, h.Pid, h.Inode), Process: p})
	}

	// Hangs: the client past the bound; a connection one side keeps open alone.
	if run.ClientStop != nil {
		add(Finding{Kind: KindHang, Side: "client", Key: "client still running",
			Text: fmt.Sprintf("the client was still running after %v: stopped by the lab (%s, %s)", hang, run.ClientStop.Signal, run.ClientStop.Status)})
	}
	for _, c := range run.Incarnations {
		for _, s := range []struct {
			name       string
			self, peer *observe.Side
		}{{"client", &c.Client, &c.Server}, {"server", &c.Server, &c.Client}} {
			last, ok := lastState(s.self)
			if !ok || !last.Ongoing {
				continue
			}
			peerLast, peerOK := lastState(s.peer)
			peerGone := !peerOK || (!peerLast.Ongoing && peerLast.State == observe.Close) ||
				peerLast.State == observe.TimeWait
			dwell := time.Duration(last.Dwell)
			switch last.State {
			case observe.Established:
				if peerGone {
					add(Finding{Kind: KindHang, Side: s.name, Key: s.name + " ESTABLISHED with its peer gone",
						Text: fmt.Sprintf("the %s's socket %v is still ESTABLISHED (%v) while the %s's is gone", s.name, s.self.Addr,
							dwell.Round(time.Millisecond), other(s.name)), Process: s.self.Owner, ForMS: ms(dwell)})
				}
			case observe.FinWait1, observe.FinWait2, observe.Closing, observe.LastAck:
				if dwell < hang/2 {
					continue
				}
				kind, whose := KindLinger, "no process holds it"
				var owner *observe.Process
				// The client has exited (or been stopped) by the end of every run: its
				// sockets are orphans whatever the last poll saw.
				if so := s.self.Socket; s.name == "server" && so != nil && so.Inode != 0 && so.State == last.State && s.self.Owner != nil {
					// Held by its application in that state (an orphan's inode is 0): it
					// waits for the peer's FIN (FIN_WAIT2 after shutdown) or never closed.
					owner = s.self.Owner
					kind, whose = KindHang, fmt.Sprintf("held by %s (pid %d)", owner.Comm, owner.Pid)
				}
				add(Finding{Kind: kind, Side: s.name, Key: fmt.Sprintf("%s %s lingers", s.name, last.State),
					Text: fmt.Sprintf("the %s's socket %v is still in %s after %v (%s)", s.name, s.self.Addr, last.State,
						dwell.Round(time.Millisecond), whose), Process: owner, ForMS: ms(dwell)})
			}
		}
	}
	if run.Kernel != nil {
		for _, s := range []struct {
			name string
			k    scenario.KernelSide
		}{{"client", run.Kernel.Client}, {"server", run.Kernel.Server}} {
			if n := s.k.Counters["TcpExtTCPAbortOnTimeout"]; n > 0 {
				add(Finding{Kind: KindLinger, Side: s.name, Key: s.name + " kernel gave up retransmitting",
					Text: fmt.Sprintf("the %s's kernel gave up on %d connection(s) after retransmitting in vain (TcpExtTCPAbortOnTimeout)", s.name, n)})
			}
		}
	}

	// Errors: what the applications said when they failed.
	if run.ClientStop == nil && run.ClientExit != 0 && rr.Harness == "" {
		add(Finding{Kind: KindError, Side: "client", Key: fmt.Sprintf("client exit %d%s", run.ClientExit, errorWord(run.ClientOutput)),
			Text: fmt.Sprintf("the client exited with %d: %s", run.ClientExit, lastLine(run.ClientOutput))})
	}
	if run.ServerStop == nil && !run.ServerRunning && run.ServerExit > 0 {
		add(Finding{Kind: KindError, Side: "server", Key: fmt.Sprintf("server exit %d%s", run.ServerExit, errorWord(run.ServerOutput)),
			Text: fmt.Sprintf("the server exited with %d: %s", run.ServerExit, lastLine(run.ServerOutput))})
	}
	return rr
}

func other(side string) string {
	if side == "client" {
		return "server"
	}
	return "client"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func lastState(s *observe.Side) (observe.StateEntry, bool) {
	if len(s.States) == 0 {
		return observe.StateEntry{}, false
	}
	return s.States[len(s.States)-1], true
}

// errorWords are what applications print for the errors a fault causes, with the name a
// finding gives them.
var errorWords = []struct{ match, name string }{
	{"reset", "ECONNRESET"}, {"ECONNRESET", "ECONNRESET"},
	{"timed out", "timeout"}, {"timeout", "timeout"}, {"ETIMEDOUT", "timeout"},
	{"refused", "ECONNREFUSED"}, {"broken pipe", "EPIPE"}, {"EPIPE", "EPIPE"},
	{"not connected", "ENOTCONN"}, {"ENOTCONN", "ENOTCONN"},
}

// errorWord names the error an output reports, as " (ECONNRESET)", or "".
func errorWord(out string) string {
	low := strings.ToLower(out)
	for _, w := range errorWords {
		if strings.Contains(low, strings.ToLower(w.match)) {
			return " (" + w.name + ")"
		}
	}
	return ""
}

// lastLine is the last non-empty line of an output, at most 200 bytes.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if l == "" {
		return "(no output)"
	}
	if len(l) > 200 {
		l = l[:200] + "…"
	}
	return l
}
