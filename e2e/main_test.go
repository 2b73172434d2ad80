package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// finproxyBin is the finproxy binary built once for all tests.
var finproxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "finproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	finproxyBin = filepath.Join(dir, "finproxy")
	out, err := exec.Command("go", "build", "-o", finproxyBin, "github.com/finproxy/finproxy/cmd/finproxy").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build finproxy: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newLab builds a client/router/server topology for one test and removes it afterwards.
func newLab(t *testing.T) *lab.Topology {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "iptables")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := lab.New(ctx, lab.Options{Prefix: "fptest"})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})
	return topo
}

// builtin returns argv for a built-in application.
func builtin(args ...string) []string { return append([]string{"{finproxy}", "app"}, args...) }

// runScenario runs one scenario in topo and fails the test on harness errors.
func runScenario(t *testing.T, topo *lab.Topology, spec scenario.Spec) *scenario.Result {
	t.Helper()
	if spec.Finproxy == "" {
		spec.Finproxy = finproxyBin
	}
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	if spec.Port == 0 {
		spec.Port = 8080
	}
	res, err := scenario.Run(context.Background(), topo, spec)
	if err != nil {
		t.Fatalf("scenario %s: %v", spec.Config, err)
	}
	t.Logf("event log of %s:\n%s", spec.Config, formatRecords(res.Records))
	t.Logf("finproxy summary:\n%s", res.Summary)
	if res.RunErr != nil {
		t.Errorf("finproxy run exited with %v", res.RunErr)
	}
	return res
}

func formatRecords(recs []rules.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "  %-6s %-12s seq=%d ack=%d len=%d rule=%q verdict=%s held=%s\n",
			r.Side, r.Flags, r.Seq, r.Ack, r.Len, r.Rule, r.Verdict, time.Duration(r.HeldNS))
	}
	return b.String()
}

// fins returns the FIN-carrying records sent by side, in log order.
func fins(recs []rules.Record, side rules.Side) []rules.Record {
	var out []rules.Record
	for _, r := range recs {
		if r.Side == side && r.Flags.Has(segment.FIN) {
			out = append(out, r)
		}
	}
	return out
}

// iptablesClean fails the test if the namespace's iptables or ip6tables still mention finproxy.
func iptablesClean(t *testing.T, topo *lab.Topology, role string) {
	t.Helper()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := topo.Command(context.Background(), role, save).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v: %s", save, role, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(strings.ToUpper(l), "FINPROXY") || strings.Contains(l, "NFQUEUE") {
				t.Errorf("%s in %s still has: %s", save, role, l)
			}
		}
	}
}

// lockedBuffer is an output buffer a test reads while the process writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
