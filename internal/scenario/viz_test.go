package scenario

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/verify"
	"github.com/finproxy/finproxy/viz"
	"github.com/google/go-cmp/cmp"
)

// recordedRun is run 1 of a real `finproxy lab -c lost-final-ack` (viz's testdata), with
// the preset's config.
func recordedRun(t *testing.T) (*config.Config, *RunReport) {
	t.Helper()
	data, path, ok := configs.Read("lost-final-ack")
	if !ok {
		t.Fatal("no preset lost-final-ack")
	}
	cfg, err := config.Parse(data, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../viz/testdata/lost-final-ack.json")
	if err != nil {
		t.Fatal(err)
	}
	var l viz.Ladder
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	run := &RunReport{Run: 1, Timeline: l.Conn, Records: l.Records, Observed: &observe.Report{Connections: []observe.Connection{*l.Conn}}}
	run.Timeline = &run.Observed.Connections[0]
	return cfg, run
}

func judgeAgain(cfg *config.Config, run *RunReport) {
	run.Failures = verify.Check(verify.Input{Expect: cfg.Expect, Conn: run.Timeline, Records: run.Records,
		ClientExit: run.ClientExit, ServerExit: run.ServerExit})
	run.Pass = len(run.Failures) == 0
	run.Expectations = expectations(cfg.Expect, run)
}

func TestExpectations(t *testing.T) {
	cfg, run := recordedRun(t)
	judgeAgain(cfg, run)
	want := []viz.Expectation{
		{Text: "client states: ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 → TIME_WAIT", Pass: true},
		{Text: "client sends no RST", Pass: true},
		{Text: "client exits with 0", Pass: true},
		{Text: "server states: ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSE", Pass: true},
		{Text: "server retransmits in LAST_ACK", Pass: true},
		{Text: "server receives no RST", Pass: true},
		{Text: "server exits with 0", Pass: true},
		{Text: "segments server has FIN: at least 2", Pass: true},
		{Text: "segments verdict drop rule drop-final-ack: exactly 1", Pass: true},
	}
	if diff := cmp.Diff(want, run.Expectations); diff != "" {
		t.Errorf("expectations (-want +got):\n%s", diff)
	}

	// A failed expectation says what was seen; a failure no expectation explains (the
	// harness) is listed after them.
	run.ServerExit = 3
	run.Records = run.Records[:4] // before the drop
	judgeAgain(cfg, run)
	run.Failures = append(run.Failures, "harness: something broke")
	run.Expectations = expectations(cfg.Expect, run)
	var failed []viz.Expectation
	for _, e := range run.Expectations {
		if !e.Pass {
			failed = append(failed, e)
		}
	}
	want = []viz.Expectation{
		{Text: "server exits with 0", Detail: "server exit: want 0; saw 3"},
		{Text: "segments server has FIN: at least 2", Detail: "segment server has FIN: want at least 2, saw 1"},
		{Text: "segments verdict drop rule drop-final-ack: exactly 1", Detail: "segment verdict drop rule drop-final-ack: want exactly 1, saw 0"},
		{Text: "harness: something broke"},
	}
	if diff := cmp.Diff(want, failed); diff != "" {
		t.Errorf("failed expectations (-want +got):\n%s", diff)
	}
}

func TestWriteVisuals(t *testing.T) {
	cfg, run1 := recordedRun(t)
	judgeAgain(cfg, run1)
	// Another connection this run's finproxy saw (drawn), and one it did not (an earlier
	// run's TIME_WAIT: not drawn).
	other := *run1.Timeline
	other.Client.Addr = netip.MustParseAddrPort("198.18.1.2:50000")
	leftover := *run1.Timeline
	leftover.Client.Addr = netip.MustParseAddrPort("198.18.1.2:50001")
	run1.Observed.Connections = append(run1.Observed.Connections, other, leftover)
	run1.Timeline = &run1.Observed.Connections[0]
	rec := run1.Records[0]
	rec.Client = other.Client.Addr
	run1.Records = append(run1.Records, rec)
	run2 := &RunReport{Run: 2, Failures: []string{"harness: <no lab>"}}
	run2.Expectations = expectations(cfg.Expect, run2)
	rep := &LabReport{Scenario: "lost-final-ack", Description: cfg.Description, Config: "lost-final-ack",
		Passed: 1, Failed: 1, Runs: []*RunReport{run1, run2}}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "run-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run-1", CaptureName), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.json", "index.html", "run-1/ladder.svg", "run-1/ladder-50000.svg", "run-2/ladder.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "run-1/ladder-50001.svg")); err == nil {
		t.Error("a connection finproxy saw nothing of in the run got a diagram")
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(index)
	for _, want := range []string{`href="run-1/ladder.svg"`, `href="run-1/ladder-50000.svg"`, `href="run-1/capture.pcapng"`,
		`href="run-2/ladder.svg"`, "harness: &lt;no lab&gt;", "<h2>run 2</h2>", "lost-final-ack — run 2", "1 of 2 runs failed"} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html has no %q", want)
		}
	}
	if strings.Contains(page, `href="run-2/capture.pcapng"`) {
		t.Error("index.html links a capture that does not exist")
	}
	svg, err := os.ReadFile(filepath.Join(dir, "run-1/ladder.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(svg), `<g class="seg`); n != len(run1.Records)-1 {
		t.Errorf("run-1/ladder.svg: %d arrows, want %d", n, len(run1.Records)-1)
	}
	if n := strings.Count(string(svg), `class="expect pass"`); n != 9 {
		t.Errorf("run-1/ladder.svg: %d expectations passed, want 9", n)
	}
	var back LabReport
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(b, &back); err != nil || len(back.Runs[0].Expectations) != 9 {
		t.Errorf("report.json: %v, run 1 expectations %v", err, back.Runs[0].Expectations)
	}
}

func TestJoinCaptures(t *testing.T) {
	dir := t.TempDir()
	rep := &LabReport{Runs: []*RunReport{{Run: 1}, {Run: 2}}}
	for i, content := range []string{"first section", "second section"} {
		d := filepath.Join(dir, "run-"+string(rune('1'+i)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, CaptureName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "sub", "all.pcapng")
	if err := JoinCaptures(out, dir, rep); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "first sectionsecond section" {
		t.Errorf("joined: %q", b)
	}
	rep.Runs = append(rep.Runs, &RunReport{Run: 3})
	if err := JoinCaptures(out, dir, rep); err == nil || !strings.Contains(err.Error(), "run 3") {
		t.Errorf("a missing capture: %v", err)
	}
}
