package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/scenario"
)

// labIn runs `finproxy lab --report dir` with args and returns its exit code, output and
// report.
func labIn(t *testing.T, dir string, args ...string) (int, string, *scenario.LabReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, finproxyBin, append([]string{"lab", "--report", dir}, args...)...).CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("finproxy lab: %v\n%s", err, out)
		}
		code = ee.ExitCode()
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatalf("no report.json (exit %d): %v\n%s", code, err, out)
	}
	var rep scenario.LabReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	return code, string(out), &rep
}

// artifactDir is where tests leave files for CI to keep: $TMPDIR/finproxy-artifacts.
func artifactDir(t *testing.T) string {
	dir := filepath.Join(os.TempDir(), "finproxy-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tsharkPacket is one packet of a capture as tshark reads it.
type tsharkPacket struct {
	src, flags, seq, ack, comment string
}

func tsharkRead(t *testing.T, path string) []tsharkPacket {
	t.Helper()
	cmd := exec.Command("tshark", "-r", path, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
		"-e", "ip.src", "-e", "tcp.flags.str", "-e", "tcp.seq", "-e", "tcp.ack", "-e", "frame.comment")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", path, err, stderr.String())
	}
	var pkts []tsharkPacket
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		for len(f) < 5 {
			f = append(f, "")
		}
		pkts = append(pkts, tsharkPacket{f[0], f[1], f[2], f[3], f[4]})
	}
	return pkts
}

// TestLabCaptureLostFinalAck: the capture of a lost-final-ack run, read by tshark, has
// every segment finproxy queued, each with a comment, and the dropped final ACK says by
// which rule; `lab --pcap` joins the runs' captures.
func TestLabCaptureLostFinalAck(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "tshark")
	t.Parallel()
	dir := t.TempDir()
	joined := filepath.Join(dir, "all.pcapng")
	code, out, rep := labIn(t, dir, "-c", "lost-final-ack", "--runs", "2", "--port", labPort(), "--pcap", joined)
	if code != 0 {
		t.Fatalf("lab: exit %d\n%s", code, out)
	}
	total := 0
	for _, run := range rep.Runs {
		capture := filepath.Join(dir, fmt.Sprintf("run-%d", run.Run), scenario.CaptureName)
		pkts := tsharkRead(t, capture)
		recs, err := scenario.ReadLog(filepath.Join(dir, fmt.Sprintf("run-%d", run.Run), "events.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		var listing strings.Builder
		for _, p := range pkts {
			fmt.Fprintf(&listing, "  %-12s %-14s seq=%-5s ack=%-5s %s\n", p.src, p.flags, p.seq, p.ack, p.comment)
		}
		t.Logf("run %d: %s (%d packets):\n%s", run.Run, capture, len(pkts), listing.String())
		// Nothing is rewritten or injected here: one packet per queued segment. The two
		// FINs, the dropped ACK, the retransmitted FIN, the ACK from TIME_WAIT at least
		// (the rules act on the teardown only: the handshake is not queued).
		if len(pkts) != len(recs) || len(pkts) < 5 {
			t.Errorf("run %d: %d packets, %d event log records: want one packet per record, at least 5", run.Run, len(pkts), len(recs))
		}
		for _, p := range pkts {
			if strings.Contains(p.flags, "S") {
				t.Errorf("run %d: a SYN was queued (%s): lost-final-ack's rules need no handshake", run.Run, p.flags)
			}
		}
		client := netip.MustParseAddrPort(run.Connections[0].Client.Addr).Addr().String()
		server := netip.MustParseAddrPort(run.Connections[0].Server.Addr).Addr().String()
		var dropped, serverFINs []tsharkPacket
		for i, p := range pkts {
			if !strings.HasPrefix(p.comment, "finproxy: ") {
				t.Errorf("run %d packet %d: comment %q", run.Run, i+1, p.comment)
			}
			if strings.Contains(p.comment, "dropped") {
				dropped = append(dropped, p)
			}
			if p.src == server && strings.Contains(p.flags, "F") {
				serverFINs = append(serverFINs, p)
			}
		}
		if len(dropped) != 1 || dropped[0].comment != "finproxy: dropped by drop-final-ack" {
			t.Fatalf("run %d: dropped packets %+v, want exactly the final ACK, commented \"finproxy: dropped by drop-final-ack\"", run.Run, dropped)
		}
		// tshark's flag string is 12 characters, "·······A····" for a pure ACK.
		if d := dropped[0]; strings.Trim(d.flags, "·.") != "A" || d.src != client {
			t.Errorf("run %d: the dropped packet is %+v, want a pure ACK from the client %s", run.Run, d, client)
		}
		if len(serverFINs) < 2 {
			t.Errorf("run %d: %d FINs of the server in the capture, want 2 (the retransmission)", run.Run, len(serverFINs))
		}
		total += len(pkts)
	}
	if all := tsharkRead(t, joined); len(all) != total {
		t.Errorf("--pcap %s: %d packets, want %d (every run's)", joined, len(all), total)
	}
}

// TestLabLadderSimultaneousClose renders the report's index.html of a simultaneous-close
// run in headless Chromium, keeps the screenshot as an artifact, and checks the diagram:
// both sides' CLOSING, one arrow per segment finproxy saw.
func TestLabLadderSimultaneousClose(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "chromium")
	t.Parallel()
	dir := t.TempDir()
	code, out, rep := labIn(t, dir, "-c", "simultaneous-close", "--port", labPort())
	if code != 0 || len(rep.Runs) != 1 || len(rep.Runs[0].Connections) != 1 {
		t.Fatalf("lab: exit %d\n%s", code, out)
	}
	conn := rep.Runs[0].Connections[0]
	segments := len(conn.Client.Segments) + len(conn.Server.Segments)
	ruled := 0 // segments a rule (a hold) acted on: each says so on its arrow
	for _, sg := range append(conn.Client.Segments, conn.Server.Segments...) {
		if sg.Rule != "" {
			ruled++
		}
	}
	svgB, err := os.ReadFile(filepath.Join(dir, "run-1", scenario.LadderName))
	if err != nil {
		t.Fatal(err)
	}
	svg := string(svgB)
	for _, c := range []struct {
		what string
		n    int
		want int
	}{
		{"CLOSING labels", strings.Count(svg, ">CLOSING<"), 2},
		{"arrows", strings.Count(svg, `<g class="seg`), segments},
		{"rule labels", len(regexp.MustCompile(`<text[^>]*>[^<]* by hold-`).FindAllString(svg, -1)), ruled},
		{"passed expectations", strings.Count(svg, `class="expect pass"`), len(rep.Runs[0].Expectations)},
	} {
		if c.n != c.want {
			t.Errorf("ladder.svg: %d %s, want %d", c.n, c.what, c.want)
		}
	}
	// Both FINs and both ACKs of the FINs (the rules act on the teardown only: no
	// handshake is queued).
	if segments < 4 {
		t.Errorf("%d segments in the report, want at least 4", segments)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg ", `href="run-1/ladder.svg"`, `href="run-1/capture.pcapng"`, `href="report.json"`, ">CLOSING<"} {
		if !strings.Contains(string(index), want) {
			t.Errorf("index.html has no %q", want)
		}
	}
	for _, bad := range []string{"http://", "https://", "<script"} {
		if strings.Contains(strings.ReplaceAll(string(index), `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("index.html is not self-contained: it has %q", bad)
		}
	}

	shot := filepath.Join(artifactDir(t), "simultaneous-close.png")
	os.Remove(shot)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir="+t.TempDir(), "--screenshot="+shot, "--window-size=1280,1500",
		"file://"+filepath.Join(dir, "index.html"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	t.Logf("screenshot: %s", shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1500 {
		t.Errorf("screenshot is %v, want 1280×1500", b)
	}
	// The page was drawn: many colours (state bars, labels), not a blank or error page.
	colours := map[uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("screenshot has %d colours: the page did not render", len(colours))
	}
}

// TestLabProgress: on a terminal `lab --runs N` updates one line in place (run k of N,
// passed so far); otherwise it prints one plain line per run, without escape codes.
func TestLabProgress(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "script")
	t.Parallel()
	port := labPort()
	// What is checked here is how progress is shown, not whether the runs pass (that is
	// TestLabPresets' job): exit 1 (a failed run) is fine, anything else is not.
	code, out, _ := labIn(t, t.TempDir(), "-c", "four-way-close", "--runs", "2", "--port", port)
	if code != 0 && code != 1 {
		t.Fatalf("lab: exit %d\n%s", code, out)
	}
	if strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("output to a pipe has escape codes or carriage returns: %q", out)
	}
	for _, want := range []*regexp.Regexp{regexp.MustCompile(`run 1 of 2: (pass|FAIL) in `), regexp.MustCompile(`run 2 of 2: (pass|FAIL) in `),
		regexp.MustCompile(`four-way-close: \d of 2 runs passed`)} {
		if !want.MatchString(out) {
			t.Errorf("output has no %q:\n%s", want, out)
		}
	}

	// On a terminal (script gives the command a pty).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	line := fmt.Sprintf("%s lab -c four-way-close --runs 2 --port %s", finproxyBin, port)
	b, err := exec.CommandContext(ctx, "script", "-qefc", line, "/dev/null").CombinedOutput()
	tty := string(b)
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("lab on a pty: %v\n%q", err, tty)
	}
	for _, want := range []*regexp.Regexp{regexp.MustCompile(`\r\x1b\[Krun 1 of 2: (pass|FAIL) \(\d passed so far\)`),
		regexp.MustCompile(`\r\x1b\[Krun 2 of 2: (pass|FAIL) \(\d passed so far\)`), regexp.MustCompile(`four-way-close: \d of 2 runs passed`)} {
		if !want.MatchString(tty) {
			t.Errorf("terminal output has no %q:\n%q", want, tty)
		}
	}
}
