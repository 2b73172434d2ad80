package sweep

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/internal/tomlpos"
)

// Fault is one fault of a sweep: a config whose rules make it happen.
type Fault struct {
	Name        string
	Description string
	// Origin says where it comes from: "preset", "generated" or the file it was read from.
	Origin string
	// TOML is the config's text, Config the loaded config (its [lab] and [expect] are
	// the sweep's own at run time; its [lab] sysctls are kept).
	TOML   []byte
	Config *config.Config
}

// Presets run by default: the presets whose fault acts on any TCP client and server.
// Every preset is either here or in presetsNotSwept, with the reason (a test checks it).
var sweptPresets = []string{
	"lost-fin", "lost-final-ack", "three-way-close", "simultaneous-close", "half-close",
	"fin-with-data", "fin-wait-2-hang", "no-time-wait", "lost-syn-ack", "lost-handshake-ack",
	"reset-injection",
}

// presetsNotSwept are the presets a default sweep leaves out, and why.
var presetsNotSwept = map[string]string{
	"four-way-close":  "no fault: the sweep's baseline (none) is the same",
	"close-wait-leak": "no fault: the leak it shows is its built-in server's",
	"time-wait-reuse": "needs a client that connects twice from one port",
	"old-duplicate":   "needs a client that connects twice from one port",
}

// generated are the faults on the applications' data, for each side: the loss, the
// delay and a reset at the first data segment. %[1]s is the side, %[2]s the peer, %[3]s
// the delay.
var generated = []struct{ name, description, rule string }{
	{"drop-first-data-%[1]s", "lose the %[1]s's first data segment once: its kernel sends it again", `
[[rule]]
name = "drop-first-data"
side = "%[1]s"
payload = "some"
nth = 1
action = "drop"
`},
	{"delay-data-%[1]s", "delay every data segment of the %[1]s by %[3]s (retransmissions too): a slow path", `
[[rule]]
name = "delay-data"
side = "%[1]s"
payload = "some"
action = "delay"
delay = "%[3]s"
`},
	{"reset-first-data-%[1]s", "replace the %[1]s's first data segment by a RST to the %[2]s: the %[2]s sees the %[1]s reset mid-request", `
[[rule]]
name = "reset-first-data"
side = "%[1]s"
payload = "some"
nth = 1
action = "inject-rst"
toward = "%[2]s"
segment = "drop"
`},
}

// baseline is the sweep's first fault: none.
const baseline = "none"

// FaultNames lists every fault a sweep knows by name: the baseline, the swept presets,
// the other presets and the generated faults.
func FaultNames() []string {
	names := []string{baseline}
	names = append(names, configs.Names()...)
	for _, g := range generated {
		for _, side := range []string{"client", "server"} {
			names = append(names, fmt.Sprintf(g.name, side))
		}
	}
	return names
}

// DefaultFaults is the sweep's default: the baseline, the swept presets, and the
// generated faults of both sides.
func DefaultFaults(delay time.Duration) ([]Fault, error) {
	names := []string{baseline}
	names = append(names, sweptPresets...)
	for _, g := range generated {
		for _, side := range []string{"client", "server"} {
			names = append(names, fmt.Sprintf(g.name, side))
		}
	}
	return NamedFaults(names, delay)
}

// NamedFaults loads the faults named (see FaultNames).
func NamedFaults(names []string, delay time.Duration) ([]Fault, error) {
	var out []Fault
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		f, err := namedFault(n, delay)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no fault named")
	}
	return out, nil
}

func namedFault(name string, delay time.Duration) (Fault, error) {
	if name == baseline {
		return parse(name, "generated", []byte(fmt.Sprintf("name = %q\ndescription = %q\n[target]\nport = 8080\n", name, "no fault: the baseline")))
	}
	if data, path, ok := configs.Read(name); ok {
		f, err := parse(path, "preset", data)
		f.Name = name
		return f, err
	}
	for _, g := range generated {
		for _, side := range []string{"client", "server"} {
			peer := "server"
			if side == "server" {
				peer = "client"
			}
			if fmt.Sprintf(g.name, side) != name {
				continue
			}
			src := fmt.Sprintf("name = %q\ndescription = %q\n[target]\nport = 8080\n", name, fmt.Sprintf(g.description, side, peer, delay)) +
				fmt.Sprintf(g.rule, side, peer, delay)
			return parse(name, "generated", []byte(src))
		}
	}
	msg := fmt.Sprintf("unknown fault %q", name)
	if s := tomlpos.Suggest(name, FaultNames()); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return Fault{}, fmt.Errorf("%s: faults are %s, or a directory of configs", msg, strings.Join(FaultNames(), ", "))
}

// DirFaults loads every *.toml file of dir as a fault, named after its file.
func DirFaults(dir string) ([]Fault, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no *.toml config in it", dir)
	}
	slices.Sort(paths)
	var out []Fault
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		f, err := parse(p, p, data)
		if err != nil {
			return nil, err
		}
		f.Name = strings.TrimSuffix(filepath.Base(p), ".toml")
		out = append(out, f)
	}
	return out, nil
}

func parse(file, origin string, data []byte) (Fault, error) {
	cfg, err := config.Parse(data, file)
	if err != nil {
		return Fault{}, err
	}
	name := cfg.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(file), ".toml")
	}
	return Fault{Name: name, Description: cfg.Description, Origin: origin, TOML: data, Config: cfg}, nil
}
