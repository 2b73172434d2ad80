package deps

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/finproxy/finproxy/"

// forbidden lists, per package, import path prefixes that must not appear among its
// dependencies (direct or transitive).
var forbidden = map[string][]string{
	"segment": {mod + "rules", mod + "nfq", mod + "observe", "github.com/BurntSushi/toml", "github.com/mdlayher/netlink", "github.com/vishvananda/netlink"},
	"rules": {mod + "nfq", mod + "observe", mod + "lab", mod + "internal/runner",
		"github.com/florianl/go-nfqueue", "github.com/mdlayher/netlink", "github.com/vishvananda/netlink", "github.com/coreos/go-iptables"},
	// config reads a file and judges it: it runs nothing.
	"config": {mod + "nfq", mod + "lab", mod + "internal/runner",
		"github.com/florianl/go-nfqueue", "github.com/mdlayher/netlink", "github.com/vishvananda/netlink", "github.com/coreos/go-iptables"},
	"nfq":     {mod + "rules", mod + "observe", mod + "lab", "github.com/BurntSushi/toml"},
	"observe": {mod + "rules", mod + "nfq", mod + "lab", "github.com/BurntSushi/toml", "github.com/florianl/go-nfqueue"},
	"lab":     {mod + "nfq", "github.com/florianl/go-nfqueue"},
	"mutate":  {mod + "nfq", mod + "observe", "github.com/BurntSushi/toml", "github.com/florianl/go-nfqueue"},
	// verify judges a run from the observation and the event log alone.
	"verify": {mod + "nfq", mod + "lab", mod + "cmd", mod + "internal/runner", mod + "internal/scenario",
		"github.com/florianl/go-nfqueue", "github.com/coreos/go-iptables"},
	// control is the API of finproxy serve: it drives a Backend (runner.Service), it does
	// not run labs.
	"control": {mod + "lab", mod + "internal/scenario", mod + "observe"},
	// control/client is what test suites import: the standard library only.
	"control/client": {mod, "github.com/", "golang.org/x/"},
}

// layers lists every package of the module (cmd/finproxy apart: the command line may
// import anything; nothing may import a command) with the packages of the module it may
// import directly. Each
// may import only packages listed before it, so dependencies point one way; a package
// that is not listed fails the test: a new package says where it stands.
var layers = []struct {
	pkg     string
	imports []string
}{
	// Leaves: what the rest is built on, or stands on its own.
	{"segment", nil},
	// The kernel's TCP state names: what the observer reports and [expect] takes.
	{"tcpstate", nil},
	// The event log's record of a segment: written by the engine, carried by the
	// observer, told by story.
	{"eventlog", []string{"segment"}},
	// The observer carries the segments' records on their connections' timelines.
	{"observe", []string{"eventlog", "tcpstate"}},
	{"nfq", nil},
	{"lab", nil},
	{"configs", nil},
	{"internal/junit", nil},
	{"internal/golden", nil},
	// Where the keys and values of a TOML source are written, and "did you mean".
	{"internal/tomlpos", nil},
	{"internal/nstest", nil},
	{"internal/deps", nil},
	{"internal/apps", nil},
	{"internal/apps/cmd/fpapp", []string{"internal/apps"}},
	{"control/client", nil},
	// The engine and what judges and draws its runs.
	{"mutate", []string{"segment"}},
	// Whole segments for the engine's tests and fuzzing.
	{"internal/segtest", []string{"mutate", "segment"}},
	{"rules", []string{"eventlog", "segment", "mutate"}},
	// The scenario file: the engine's rules, the lab and the expectations, with their
	// positioned errors.
	{"config", []string{"internal/tomlpos", "rules", "segment", "tcpstate"}},
	{"verify", []string{"config", "observe", "rules"}},
	// What happened on one connection, told once for every renderer.
	{"story", []string{"eventlog", "observe", "segment"}},
	{"viz", []string{"observe", "rules", "segment", "story"}},
	// The observation as Prometheus metrics (serve, watch).
	{"internal/obsmetrics", []string{"observe"}},
	// A run: the queue, the engine and the observer together.
	{"internal/runner", []string{"nfq", "observe", "rules", "segment", "story"}},
	{"control", []string{"config", "configs", "control/client", "nfq", "rules"}},
	// The lab, and what runs it.
	{"internal/scenario", []string{"config", "internal/junit", "lab", "observe", "rules", "story", "verify", "viz"}},
	{"internal/sweep", []string{"config", "configs", "internal/junit", "internal/scenario", "internal/tomlpos", "observe", "viz"}},
	// The benchmark measures run's pipeline, not the lab or the commands.
	{"cmd/fpbench", []string{"config", "internal/runner", "lab", "nfq", "observe", "rules", "segment"}},
	// Tests only.
	{"e2e", nil},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// TestLayers checks every package's direct imports of the module against layers.
func TestLayers(t *testing.T) {
	pos := map[string]int{}
	for i, l := range layers {
		pos[l.pkg] = i
		for _, imp := range l.imports {
			if j, ok := pos[imp]; !ok || j >= i {
				t.Errorf("layers: %s may import %s, which is not listed before it", l.pkg, imp)
			}
		}
	}
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "../../...").Output()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		if rel == "cmd/finproxy" {
			continue
		}
		i, ok := pos[rel]
		if !ok {
			t.Errorf("package %s is not in layers (internal/deps): say which packages of the module it may import", rel)
			continue
		}
		seen[rel] = true
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			if r := strings.TrimPrefix(imp, mod); !slices.Contains(layers[i].imports, r) {
				t.Errorf("%s imports %s: not among what layers lets it import (%v)", rel, r, layers[i].imports)
			}
		}
	}
	for _, l := range layers {
		if !seen[l.pkg] {
			t.Errorf("layers lists %s, which go list does not find", l.pkg)
		}
	}
}

func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Deps", "../../...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	seen := map[string]bool{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		// Every package below cmd/ may import anything; nothing may import cmd/.
		for _, d := range p.Deps {
			if strings.HasPrefix(d, mod+"cmd/") {
				t.Errorf("%s imports %s: nothing may depend on a command", p.ImportPath, d)
			}
		}
		top := strings.SplitN(rel, "/", 2)[0]
		rulesFor, ok := forbidden[top]
		if own, found := forbidden[rel]; found && rel != top {
			// A package with rules of its own (control/client) obeys them too.
			rulesFor, ok = append(slices.Clone(rulesFor), own...), true
			seen[rel] = true
		}
		if !ok {
			continue
		}
		seen[top] = true
		for _, d := range p.Deps {
			for _, f := range rulesFor {
				// An entry ending in "/" forbids everything below it.
				if d == f || strings.HasPrefix(d, strings.TrimSuffix(f, "/")+"/") {
					t.Errorf("%s must not depend on %s (it does, directly or through another package)", p.ImportPath, d)
				}
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	for _, must := range []string{"segment", "rules", "nfq", "verify", "control", "control/client"} {
		if !seen[must] {
			t.Errorf("package %s not found by go list: the rule for it checks nothing", must)
		}
	}
}
