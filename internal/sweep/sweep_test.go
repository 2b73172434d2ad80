package sweep

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/observe"
)

// Every preset is either swept by default or left out with a reason: a new preset must
// be classified.
func TestEveryPresetClassified(t *testing.T) {
	for _, n := range configs.Names() {
		_, out := presetsNotSwept[n]
		in := slices.Contains(sweptPresets, n)
		if in == out {
			t.Errorf("preset %s: swept %v, left out %v: want exactly one", n, in, out)
		}
	}
	for _, n := range append(slices.Clone(sweptPresets), keys(presetsNotSwept)...) {
		if _, _, ok := configs.Read(n); !ok {
			t.Errorf("%s is no preset", n)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDefaultFaults(t *testing.T) {
	fs, err := DefaultFaults(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
		if f.Config == nil || len(f.TOML) == 0 {
			t.Errorf("%s: no config", f.Name)
		}
	}
	if names[0] != "none" || len(fs) != 1+len(sweptPresets)+2*len(generated) {
		t.Errorf("default faults %v", names)
	}
	delay := fs[slices.Index(names, "delay-data-client")]
	if !strings.Contains(string(delay.TOML), `delay = "3s"`) || !strings.Contains(delay.Description, "3s") {
		t.Errorf("delay-data-client does not take the delay:\n%s", delay.TOML)
	}
	reset := fs[slices.Index(names, "reset-first-data-server")]
	if r := reset.Config.Rules[0]; r.ActionName != "inject-rst" || !strings.Contains(string(reset.TOML), `toward = "client"`) {
		t.Errorf("reset-first-data-server: %+v\n%s", r, reset.TOML)
	}
}

func TestNamedFaultsErrors(t *testing.T) {
	if _, err := NamedFaults([]string{"lost-fni"}, time.Second); err == nil || !strings.Contains(err.Error(), "did you mean lost-fin?") {
		t.Errorf("a typo: %v", err)
	}
	if _, err := NamedFaults([]string{"", " "}, time.Second); err == nil {
		t.Error("no fault named: no error")
	}
	fs, err := NamedFaults([]string{"none", "lost-fin", "none"}, time.Second)
	if err != nil || len(fs) != 2 {
		t.Errorf("duplicates: %v %v", fs, err)
	}
}

// classify reads a run as findings: each kind from what the lab reported.
func TestClassify(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	client, server := netip.MustParseAddrPort("198.18.1.2:40000"), netip.MustParseAddrPort("198.18.2.2:9000")
	st := func(s observe.State, at time.Duration, ongoing bool, dwell time.Duration) observe.StateEntry {
		return observe.StateEntry{State: s, At: t0.Add(at), Ongoing: ongoing, Dwell: observe.Duration(dwell)}
	}
	conn := &observe.Connection{Incarnation: 1,
		Client: observe.Side{Addr: client, States: []observe.StateEntry{st(observe.Established, 0, false, time.Second),
			st(observe.FinWait1, time.Second, false, 0), st(observe.FinWait2, time.Second, true, 5*time.Second)}},
		Server: observe.Side{Addr: server, States: []observe.StateEntry{st(observe.Established, 0, false, time.Second),
			st(observe.CloseWait, time.Second, true, 5*time.Second)}},
	}
	py := &observe.Process{Pid: 42, Comm: "python3"}
	run := &scenario.RunReport{Run: 1, Timeline: conn, Incarnations: []*observe.Connection{conn},
		Leaks:       []observe.Leak{{Local: server, Remote: client, Age: observe.Duration(5 * time.Second), Owner: py}},
		HeldSockets: []scenario.HeldSocket{{Pid: 7, Comm: "goserver", Inode: 99}},
		ClientExit:  1, ClientOutput: "error: [Errno 104] Connection reset by peer\n",
		Kernel: &scenario.KernelReport{Server: scenario.KernelSide{Counters: map[string]int64{"TcpExtTCPAbortOnTimeout": 1}}},
	}
	rr := classify(run, 4*time.Second)
	var got []string
	for _, f := range rr.Findings {
		got = append(got, f.Kind+": "+f.Key)
	}
	want := []string{
		"leak: server CLOSE_WAIT leak",
		"leak: server socket never closed after the kernel closed it",
		"linger: client FIN_WAIT2 lingers",
		"linger: server kernel gave up retransmitting",
		"error: client exit 1 (ECONNRESET)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rr.Findings[0].Process != py || !strings.Contains(rr.Findings[0].Text, "python3 (pid 42)") {
		t.Errorf("the leak does not name its process: %+v", rr.Findings[0])
	}

	// A client the lab stopped is a hang; a server left ESTABLISHED alone too.
	conn2 := &observe.Connection{Incarnation: 1,
		Client: observe.Side{Addr: client, States: []observe.StateEntry{st(observe.Established, 0, false, time.Second), st(observe.Close, time.Second, false, 0)}},
		Server: observe.Side{Addr: server, States: []observe.StateEntry{st(observe.Established, 0, true, 6*time.Second)}},
	}
	run2 := &scenario.RunReport{Run: 2, Timeline: conn2, Incarnations: []*observe.Connection{conn2}, ClientExit: -1,
		ClientStop: &scenario.Stop{Signal: "SIGTERM", Status: "signal: terminated"}}
	got = nil
	for _, f := range classify(run2, 4*time.Second).Findings {
		got = append(got, f.Kind+": "+f.Key)
	}
	want = []string{"hang: client still running", "hang: server ESTABLISHED with its peer gone"}
	if !slices.Equal(got, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := summarize([]*RunResult{rr, classify(run2, 4*time.Second), rr}); s[0].Kind != KindLeak || s[0].Runs != 2 || s[0].Example != 1 {
		t.Errorf("summary %+v", s)
	}
}

// A directory of configs is a list of faults named after their files; a bad one is
// refused with its position.
func TestDirFaults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b-late-fin.toml", "[target]\nport = 8080\n[[rule]]\nname = \"d\"\nhas_flags = \"FIN\"\naction = \"delay\"\ndelay = \"300ms\"\n")
	write("a-drop-rst.toml", "[target]\nport = 8080\n[[rule]]\nname = \"d\"\nhas_flags = \"RST\"\naction = \"drop\"\n")
	write("notes.txt", "not a config")
	fs, err := DirFaults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || fs[0].Name != "a-drop-rst" || fs[1].Name != "b-late-fin" || fs[1].Config.Rules[0].ActionName != "delay" {
		t.Errorf("faults %+v", fs)
	}
	write("c-bad.toml", "[target]\nport = 8080\n[[rule]]\nname = \"d\"\naction = \"dorp\"\n")
	if _, err := DirFaults(dir); err == nil || !strings.Contains(err.Error(), "c-bad.toml:5:10") || !strings.Contains(err.Error(), "did you mean drop") {
		t.Errorf("a bad config: %v", err)
	}
	if _, err := DirFaults(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no *.toml") {
		t.Errorf("an empty directory: %v", err)
	}
}
