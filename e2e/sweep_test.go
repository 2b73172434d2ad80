package e2e

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/sweep"
)

// TestSweep runs the default sweep against three small servers written for it, with
// one client (a Python program that sends a request, half-closes 50 ms later, and waits
// 2 s for the response):
//   - goserver -bug reset (Go) forgets close() when the peer resets mid-request;
//   - pyserver.py --bug halfclose (Python) leaves the connection in CLOSE_WAIT when the
//     client has half-closed by the time the request is read;
//   - goserver without a bug.
//
// The sweep must name exactly the faults that trigger each planted bug, with the
// server's process, in every run, and no leak or hang at all for the correct server.
// Why these faults: a reset replacing the client's request is the peer resetting
// mid-request; the client's FIN reaches the server before its request only when the
// request is lost (its retransmission comes after the FIN) or delayed (3 s here, past the
// client's 2 s wait).
func TestSweep(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "python3")
	dir := t.TempDir()
	goserver := filepath.Join(dir, "goserver")
	if out, err := exec.Command("go", "build", "-o", goserver, "./testdata/sweep/goserver").CombinedOutput(); err != nil {
		t.Fatalf("build goserver: %v\n%s", err, out)
	}
	testdata, err := filepath.Abs("testdata/sweep")
	if err != nil {
		t.Fatal(err)
	}
	client := "python3 " + filepath.Join(testdata, "client.py") + " {server_addr} {port}"
	for _, tc := range []struct {
		name, server string
		comm         string
		// leaks are the faults that must show a leak of the server's process, in every
		// run; no other fault may show a leak or a hang.
		leaks   []string
		leakKey string
	}{
		{name: "go-reset-bug", server: goserver + " -listen {server_addr}:{port} -bug reset", comm: "goserver",
			leaks: []string{"reset-first-data-client"}, leakKey: "server socket never closed after the kernel closed it"},
		{name: "python-halfclose-bug", server: "python3 " + filepath.Join(testdata, "pyserver.py") + " --host {server_addr} --port {port} --bug halfclose",
			comm: "python3", leaks: []string{"drop-first-data-client", "delay-data-client"}, leakKey: "server CLOSE_WAIT leak"},
		{name: "correct", server: goserver + " -listen {server_addr}:{port}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const runs = 2
			out := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, finproxyBin, "sweep", "--server", tc.server, "--ready", "listening",
				"--client", client, "--port", labPort(), "--runs", "2", "--close-wait", "1s", "--hang", "4s", "--delay", "3s",
				"--report", out, "--junit", filepath.Join(out, "junit.xml"))
			stdout, err := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			wantCode := 1
			if len(tc.leaks) == 0 {
				wantCode = 0
			}
			if code != wantCode {
				t.Errorf("exit status %d, want %d (%v)\n%s", code, wantCode, err, stdout)
			}
			var rep sweep.Report
			b, err := os.ReadFile(filepath.Join(out, "report.json"))
			if err != nil {
				t.Fatalf("report.json: %v\n%s", err, stdout)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			defaults, err := sweep.DefaultFaults(3 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Faults) != len(defaults) {
				t.Fatalf("%d faults in the report, want the %d of the default sweep\n%s", len(rep.Faults), len(defaults), stdout)
			}
			var leaking []string
			for _, f := range rep.Faults {
				if len(f.Runs) != runs {
					t.Errorf("%s: %d runs, want %d", f.Name, len(f.Runs), runs)
				}
				for _, r := range f.Runs {
					if r.Harness != "" {
						t.Errorf("%s run %d: harness error: %s", f.Name, r.Run, r.Harness)
					}
				}
				for _, c := range f.Summary {
					switch {
					case c.Kind == sweep.KindLeak:
						if c.Key != tc.leakKey || c.Process == nil || c.Process.Comm != tc.comm || c.Runs != runs {
							t.Errorf("%s: leak %q in %d of %d runs, process %+v: want %q of %s in every run", f.Name, c.Key, c.Runs, runs, c.Process, tc.leakKey, tc.comm)
						}
						leaking = append(leaking, f.Name)
					case c.Kind == sweep.KindHang:
						t.Errorf("%s: hang %q in %d runs: none of these applications hangs", f.Name, c.Key, c.Runs)
					}
				}
			}
			slices.Sort(leaking)
			want := slices.Clone(tc.leaks)
			slices.Sort(want)
			if !slices.Equal(leaking, want) {
				t.Errorf("faults with a leak: %v, want exactly %v\n%s", leaking, want, stdout)
			}
			// What a reader of the terminal, the page and the JUnit file sees.
			for _, name := range tc.leaks {
				if !strings.Contains(string(stdout), name) {
					t.Errorf("the table does not name %s:\n%s", name, stdout)
				}
				page, _ := os.ReadFile(filepath.Join(out, "index.html"))
				if !strings.Contains(string(page), `href="`+name+`/run-`) || !strings.Contains(string(page), "ladder</a>") {
					t.Errorf("index.html has no ladder link for %s", name)
				}
			}
			var junit struct {
				Suites []struct {
					Failures int `xml:"failures,attr"`
					Cases    []struct {
						Name    string    `xml:"name,attr"`
						Failure *struct{} `xml:"failure"`
					} `xml:"testcase"`
				} `xml:"testsuite"`
			}
			jb, err := os.ReadFile(filepath.Join(out, "junit.xml"))
			if err != nil || xml.Unmarshal(jb, &junit) != nil || len(junit.Suites) != 1 {
				t.Fatalf("junit.xml: %v\n%s", err, jb)
			}
			var failed []string
			for _, c := range junit.Suites[0].Cases {
				if c.Failure != nil {
					failed = append(failed, c.Name)
				}
			}
			slices.Sort(failed)
			if !slices.Equal(failed, want) || len(junit.Suites[0].Cases) != len(defaults) {
				t.Errorf("junit: %d cases, failed %v; want %d cases, failed %v", len(junit.Suites[0].Cases), failed, len(defaults), want)
			}
		})
	}
}
