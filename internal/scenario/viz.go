package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/verify"
	"github.com/finproxy/finproxy/viz"
)

// CaptureName is the pcapng capture each run keeps in its directory (run-N/).
const CaptureName = "capture.pcapng"

// LadderName is the ladder diagram of a run's connection in its directory.
const LadderName = "ladder.svg"

// expectations lists every expectation of [expect] with its outcome in run (verify.Results),
// then the failures of the run that no expectation explains (the harness, finproxy run).
func expectations(expect *config.Expect, run *RunReport) []viz.Expectation {
	var out []viz.Expectation
	failed := map[string]bool{}
	for _, r := range verify.Results(verifyInput(expect, run)) {
		for _, fl := range r.Failures {
			failed[fl] = true
		}
		out = append(out, viz.Expectation{Text: r.Text, Pass: r.Pass, Detail: r.Saw()})
	}
	for _, fl := range run.Failures {
		if !failed[fl] {
			out = append(out, viz.Expectation{Text: fl, Pass: false})
		}
	}
	return out
}

// Ladder is the diagram of a run's connection (the one it was judged on), or of conn when
// not nil (another connection the run observed).
func Ladder(rep *LabReport, run *RunReport, conn *observe.Connection) viz.Ladder {
	pass := run.Pass
	l := viz.Ladder{
		Title:    fmt.Sprintf("%s — run %d", rep.Scenario, run.Run),
		Subtitle: rep.Description,
		Finproxy: "on the router (FORWARD)",
		Pass:     &pass,
		Conn:     run.Timeline,
		Records:  run.Records,
	}
	if l.Records == nil {
		l.Records = []rules.Record{}
	}
	if conn != nil && conn != run.Timeline {
		l.Conn, l.Pass = conn, nil
		l.Title = fmt.Sprintf("%s — run %d, another connection", rep.Scenario, run.Run)
	} else {
		l.Expectations = run.Expectations
	}
	if l.Conn == nil {
		l.Notes = append(l.Notes, "No connection was observed: only the segments finproxy queued are drawn, without the sides' states.")
	}
	l.Notes = append(l.Notes, run.Warnings...)
	return l
}

// others are the connections a run observed besides the one it was judged on, that
// finproxy saw segments of in this run (not what is left of earlier runs: their TIME_WAIT
// sockets are observed too).
func others(run *RunReport) []*observe.Connection {
	if run.Observed == nil {
		return nil
	}
	seen := map[[2]netip.AddrPort]bool{}
	for _, r := range run.Records {
		seen[[2]netip.AddrPort{unmap(r.Client), unmap(r.Server)}] = true
	}
	var out []*observe.Connection
	for i := range run.Observed.Connections {
		c := &run.Observed.Connections[i]
		if c == run.Timeline || !seen[[2]netip.AddrPort{unmap(c.Client.Addr), unmap(c.Server.Addr)}] {
			continue
		}
		if t := run.Timeline; t != nil && c.Client.Addr == t.Client.Addr && c.Server.Addr == t.Server.Addr && c.Incarnation == t.Incarnation {
			continue
		}
		out = append(out, c)
	}
	return out
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// writeVisuals writes, for each run, run-N/ladder.svg (the connection it was judged on)
// and run-N/ladder-PORT.svg for any other connection it observed, then dir/index.html: the
// runs with their outcome and failures, links to their diagrams and captures, and the
// diagram of the first failed run (or of the first run) inline.
func writeVisuals(dir string, rep *LabReport) error {
	page := viz.Page{
		Title:       "finproxy lab: " + rep.Scenario,
		Description: rep.Description,
		Config:      rep.Config,
		Server:      strings.Join(rep.Server, " "),
		Client:      strings.Join(rep.Client, " "),
		Started:     rep.Started,
		Duration:    rep.Ended.Sub(rep.Started).Round(time.Millisecond),
		Passed:      rep.Passed,
		Failed:      rep.Failed,
		Report:      "report.json",
	}
	// The page shows the diagram of the first failed run, or of the first run.
	featured := 0
	for i, run := range rep.Runs {
		if !run.Pass {
			featured = i
			break
		}
	}
	var errs []error
	for i, run := range rep.Runs {
		rdir := fmt.Sprintf("run-%d", run.Run)
		if err := os.MkdirAll(filepath.Join(dir, rdir), 0o755); err != nil {
			return err
		}
		pr := viz.PageRun{Run: run.Run, Pass: run.Pass, Failures: run.Failures, Duration: time.Duration(run.DurationMS * 1e6)}
		if len(run.Connections) > 0 {
			pr.Client = strings.Join(run.Connections[0].Client.States, " → ")
			pr.Server = strings.Join(run.Connections[0].Server.States, " → ")
		}
		var buf bytes.Buffer
		if err := viz.WriteSVG(&buf, Ladder(rep, run, nil)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, rdir, LadderName), buf.Bytes(), 0o644); err != nil {
			return err
		}
		pr.Diagrams = append(pr.Diagrams, viz.Link{Href: rdir + "/" + LadderName, Text: "ladder"})
		if i == featured {
			page.Featured, page.FeaturedSVG = run.Run, buf.String()
		}
		for _, c := range others(run) {
			var b bytes.Buffer
			if err := viz.WriteSVG(&b, Ladder(rep, run, c)); err != nil {
				return err
			}
			name := fmt.Sprintf("ladder-%d.svg", c.Client.Addr.Port())
			if c.Incarnation > 1 {
				name = fmt.Sprintf("ladder-%d-%d.svg", c.Client.Addr.Port(), c.Incarnation)
			}
			if err := os.WriteFile(filepath.Join(dir, rdir, name), b.Bytes(), 0o644); err != nil {
				errs = append(errs, err)
				continue
			}
			pr.Diagrams = append(pr.Diagrams, viz.Link{Href: rdir + "/" + name, Text: fmt.Sprintf("port %d", c.Client.Addr.Port())})
		}
		for _, file := range []struct{ name, text string }{{CaptureName, "capture"}, {"events.jsonl", "event log"}} {
			if _, err := os.Stat(filepath.Join(dir, rdir, file.name)); err == nil {
				pr.Files = append(pr.Files, viz.Link{Href: rdir + "/" + file.name, Text: file.text})
			}
		}
		page.Runs = append(page.Runs, pr)
	}
	var buf bytes.Buffer
	if err := viz.WriteHTML(&buf, page); err != nil {
		return err
	}
	errs = append(errs, os.WriteFile(filepath.Join(dir, "index.html"), buf.Bytes(), 0o644))
	return errors.Join(errs...)
}

// JoinCaptures writes to path the captures of every run kept in dir (run-N/capture.pcapng),
// one pcapng section per run, in run order: the file `lab --pcap` asks for.
func JoinCaptures(path, dir string, rep *LabReport) error {
	if d := filepath.Dir(path); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, run := range rep.Runs {
		in, err := os.Open(filepath.Join(dir, fmt.Sprintf("run-%d", run.Run), CaptureName))
		if err != nil {
			errs = append(errs, fmt.Errorf("run %d: %w", run.Run, err))
			continue
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, out.Close())
	return errors.Join(errs...)
}
