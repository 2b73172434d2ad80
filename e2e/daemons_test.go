package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/internal/scenario"
)

// daemon is a real server from a Debian package, as users run theirs: it never exits by
// itself, and it may fork workers or start through a wrapper.
type daemon struct {
	// server, client and ready are the lab's --server, --client and --ready; setup, when
	// set, prepares what the server needs (a config file) and returns extra
	// replacements for the command lines ({dir}).
	server, client, ready string
	setup                 func(t *testing.T, port string) map[string]string
	// exes are the executables of the daemon's processes: none may be left after a lab.
	exes []string
	// lab names the preset run with one server for all runs (server_lifetime "lab").
	lab string
}

var daemons = map[string]daemon{
	// One process that never exits by itself.
	"redis": {
		server: `redis-server --bind {server_addr} --port {port} --save "" --appendonly no --daemonize no --protected-mode no`,
		ready:  "Ready to accept connections",
		client: `redis-cli -h {server_addr} -p {port} PING`,
		exes:   []string{"/usr/bin/redis-server", "/usr/bin/redis-check-rdb"},
	},
	// A master and two workers that inherit its stderr (the lab's output pipe): the
	// master exiting does not close it.
	"nginx": {
		server: `nginx -c {dir}/nginx.conf`,
		ready:  "start worker process",
		client: `curl -sS --max-time 5 -o /dev/null http://{server_addr}:{port}/`,
		setup: func(t *testing.T, port string) map[string]string {
			dir := t.TempDir()
			conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user www-data;
error_log stderr notice;
pid %s/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  server { listen %s; location / { return 200 "hello\n"; } }
}
`, dir, port)
			if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			return map[string]string{"{dir}": dir}
		},
		exes: []string{"/usr/sbin/nginx"},
	},
	// Started through runuser, which forks memcached as another user and waits for it.
	// On SIGTERM runuser passes it on and waits 2 s more before it ends (3.2 s measured
	// here from SIGTERM to an empty process group): the lost-fin runs share one server.
	"memcached": {
		lab:    "lost-fin",
		server: `runuser -u memcache -- memcached -vv -l {server_addr} -p {port} -U 0`,
		ready:  "server listening",
		client: `sh -c "printf 'version\r\n' | socat - TCP:{server_addr}:{port}"`,
		exes:   []string{"/usr/bin/memcached", "/usr/sbin/runuser"},
	},
}

// TestLabDaemons runs presets against real daemons, 20 times each, with the presets' own
// expectations (those about the built-in applications' exit statuses are reported as
// not checked), and checks that nothing of the lab is left afterwards.
func TestLabDaemons(t *testing.T) {
	nstest.RequireRoot(t)
	runs := labRuns(t)
	for _, name := range []string{"redis", "nginx", "memcached"} {
		d := daemons[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, exe := range d.exes[:1] {
				nstest.RequireTool(t, filepath.Base(exe))
			}
			// The presets one after the other: the process check below counts every
			// process of the daemon's executables.
			for _, preset := range []string{"lost-final-ack", "lost-fin"} {
				port := labPort()
				server, client := d.server, d.client
				if d.setup != nil {
					for k, v := range d.setup(t, port) {
						server, client = strings.ReplaceAll(server, k, v), strings.ReplaceAll(client, k, v)
					}
				}
				lifetime := "run"
				if preset == d.lab {
					lifetime = "lab"
				}
				before := processesOf(t, d.exes)
				start := time.Now()
				res := runLabProcess(t, "-c", preset, "--runs", fmt.Sprint(runs), "--port", port, "--server-lifetime", lifetime,
					"--server", server, "--client", client, "--ready", d.ready)
				took := time.Since(start)
				if res.code != 0 || res.rep.Passed != runs {
					t.Fatalf("%s with %s: exit %d, %d of %d runs passed\n%s", preset, name, res.code, res.rep.Passed, runs, res.out)
				}
				var stopping time.Duration
				for _, r := range res.rep.Runs {
					// The daemon was still running when the scenario was over: the lab
					// stopped it, with SIGTERM (none of these ignores it), or it runs
					// on for the next run.
					switch {
					case lifetime == "lab":
						if !r.ServerRunning || r.ServerStop != nil {
							t.Errorf("%s run %d: server running %v, stop %+v: want it running on", preset, r.Run, r.ServerRunning, r.ServerStop)
						}
					case r.ServerStop == nil || r.ServerStop.Signal != "SIGTERM":
						t.Errorf("%s run %d: server stop %+v, want stopped by the lab with SIGTERM", preset, r.Run, r.ServerStop)
					default:
						stopping += time.Duration(r.ServerStop.TookMS * 1e6)
					}
				}
				if !slices.ContainsFunc(res.rep.Skipped, func(s scenario.SkippedExpectation) bool { return s.Expectation == "server exits with 0" }) ||
					!strings.Contains(res.out, "not checked: server exits with 0") {
					t.Errorf("%s: the preset's server exit expectation is not reported as not checked: %+v\n%s", preset, res.rep.Skipped, res.out)
				}
				// A run ends when its connections do, not on a timer: about two seconds
				// each (settle 0.8 s, the retransmission waited for, the daemon's stop).
				t.Logf("%s with %s (server per %s): %d runs in %v, %v of it stopping the server", preset, name, lifetime, runs,
					took.Round(time.Millisecond), stopping.Round(time.Millisecond))
				if per := (took - stopping) / time.Duration(runs); per > 5*time.Second {
					t.Errorf("%s with %s: %v per run besides the server's stop: the runs wait for something else than the scenario", preset, name, per)
				}
				res.checkLeftovers(t)
				if left := newProcesses(before, processesOf(t, d.exes)); len(left) > 0 {
					t.Errorf("%s with %s: processes left after the lab: %v", preset, name, left)
					killPIDs(left)
				}
			}
		})
	}
}

// TestLabServerLifetimeLab: one server for all runs. A daemon started once serves every
// run; each run is still observed and judged on its own.
func TestLabServerLifetimeLab(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "redis-server")
	t.Parallel()
	d := daemons["redis"]
	port := labPort()
	res := runLabProcess(t, "-c", "lost-final-ack", "--runs", "5", "--port", port, "--server-lifetime", "lab",
		"--server", d.server, "--client", d.client, "--ready", d.ready)
	if res.code != 0 || res.rep.Passed != 5 {
		t.Fatalf("exit %d, %d of 5 runs passed\n%s", res.code, res.rep.Passed, res.out)
	}
	if res.rep.ServerLifetime != "lab" {
		t.Errorf("report: server_lifetime %q", res.rep.ServerLifetime)
	}
	pids := map[string]bool{}
	for _, r := range res.rep.Runs {
		if !r.ServerRunning || r.ServerStop != nil {
			t.Errorf("run %d: server running %v, stopped %+v: want it running on for the next run", r.Run, r.ServerRunning, r.ServerStop)
		}
		if len(r.Connections) != 1 || len(r.Connections[0].Server.States) == 0 {
			t.Errorf("run %d: connections %+v", r.Run, r.Connections)
		}
		// redis prints its pid on every line; one server means one pid, and each run's
		// output is its own part (the first run's has the start).
		for _, m := range regexp.MustCompile(`(?m)^(\d+):`).FindAllStringSubmatch(r.ServerOutput, -1) {
			pids[m[1]] = true
		}
	}
	if len(pids) > 1 {
		t.Errorf("server pids over the runs: %v, want one server", pids)
	}
	if !strings.Contains(res.rep.Runs[0].ServerOutput, "Ready to accept") || strings.Contains(res.rep.Runs[1].ServerOutput, "Ready to accept") {
		t.Errorf("each run's server output is not its own part:\nrun 1: %s\nrun 2: %s", res.rep.Runs[0].ServerOutput, res.rep.Runs[1].ServerOutput)
	}
	res.checkLeftovers(t)
}

// TestLabSignalPhases: SIGTERM or SIGINT ends `lab` within 5 s in every phase of a run,
// with the applications' process groups stopped (even those that ignore SIGTERM) and the
// namespaces, hooks and tracefs instance removed; the exit status is 128 + the signal.
func TestLabSignalPhases(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "socat")
	builtinServer := "{finproxy} app server --listen {server_addr}:{port} --mode echo-close"
	builtinClient := "{finproxy} app client --connect {server_addr}:{port} --mode send-close --bytes 100"
	// ignoring returns a command that ignores SIGTERM and SIGINT and sleeps: the lab
	// must get rid of it by SIGKILL. The fraction of a second marks it as this test's.
	ignoring := func(marker string) string {
		return fmt.Sprintf(`sh -c "trap '' TERM INT; exec sleep 60.%s"`, marker)
	}
	for _, tc := range []struct {
		name, phase    string
		server, client string
		config         string
		sig            syscall.Signal
		twice          bool
	}{
		{name: "server-starting", phase: "server", server: "ignoring", client: builtinClient, sig: syscall.SIGTERM},
		{name: "client-running", phase: "client", server: builtinServer, client: "ignoring", sig: syscall.SIGTERM},
		{name: "client-running-sigint-twice", phase: "client", server: builtinServer, client: "ignoring", sig: syscall.SIGINT, twice: true},
		// The client is done, the server holds its connection in CLOSE_WAIT: the run
		// waits for the connection to be over.
		{name: "connections-open", phase: "over", client: builtinClient, sig: syscall.SIGTERM,
			server: `socat -d -d TCP-LISTEN:{port},bind={server_addr},reuseaddr "SYSTEM:cat >/dev/null; exec sleep 60.MARK"`},
		{name: "settling", phase: "settle", server: builtinServer, client: builtinClient, sig: syscall.SIGINT,
			config: `
name = "long-settle"
[target]
port = 8080
[lab]
server = "x"
client = "x"
settle = "30s"
timeout = "60s"
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := labPort()
			marker := port
			cmdline := func(s string) string {
				if s == "ignoring" {
					return ignoring(marker)
				}
				return strings.ReplaceAll(s, "MARK", marker)
			}
			cfg := "four-way-close"
			if tc.config != "" {
				cfg = writeConfig(t, tc.name, tc.config)
			}
			dir := t.TempDir()
			cmd := exec.Command(finproxyBin, "lab", "-v", "-c", cfg, "--port", port, "--runs", "3", "--report", dir,
				"--server", cmdline(tc.server), "--client", cmdline(tc.client), "--ready", readyFor(tc.server))
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out := &lockedBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			want := "phase=" + tc.phase
			deadline := time.Now().Add(40 * time.Second)
			for !strings.Contains(out.String(), want) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the lab's log after 40 s:\n%s", want, out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // well inside the phase
			sent := time.Now()
			_ = cmd.Process.Signal(tc.sig)
			if tc.twice {
				time.Sleep(100 * time.Millisecond)
				_ = cmd.Process.Signal(tc.sig)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("lab still running 10 s after %v in phase %s:\n%s", tc.sig, tc.phase, out.String())
			}
			took := time.Since(sent)
			if took > 5*time.Second {
				t.Errorf("lab took %v to end after %v in phase %s, want < 5 s", took, tc.sig, tc.phase)
			}
			if code := cmd.ProcessState.ExitCode(); code != 128+int(tc.sig) {
				t.Errorf("exit status %d after %v, want %d\n%s", code, tc.sig, 128+int(tc.sig), out.String())
			}
			res := &labProcess{pid: cmd.Process.Pid, out: out.String(), rep: &scenario.LabReport{}}
			res.rep.Namespaces = namespacesFromLog(t, out.String())
			res.checkLeftovers(t)
			if left := processesWithArg(t, "60."+marker); len(left) > 0 {
				t.Errorf("processes of this test left after %v in phase %s: %v", tc.sig, tc.phase, left)
				killPIDs(left)
			}
			// The run in progress was interrupted: it is neither passed nor failed.
			if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err == nil {
				var rep scenario.LabReport
				if err := json.Unmarshal(b, &rep); err == nil && rep.Failed > 0 {
					t.Errorf("the interrupted run is recorded as failed: %+v", rep.Runs)
				}
			}
		})
	}
}

func readyFor(server string) string {
	if strings.HasPrefix(server, "socat") {
		return "listening on"
	}
	return "ready"
}

// labProcess is a finished `finproxy lab`.
type labProcess struct {
	pid  int
	code int
	out  string
	rep  *scenario.LabReport
}

// runLabProcess runs `finproxy lab` with a report and returns how it ended.
func runLabProcess(t *testing.T, args ...string) *labProcess {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, finproxyBin, append([]string{"lab", "--report", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	res := &labProcess{pid: cmd.Process.Pid, out: string(out), rep: &scenario.LabReport{}}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("finproxy lab: %v\n%s", err, out)
		}
		res.code = ee.ExitCode()
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatalf("no report.json (exit %d): %v\n%s", res.code, err, out)
	}
	if err := json.Unmarshal(b, res.rep); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	return res
}

// checkLeftovers fails the test if the lab's namespaces or its tracefs instances are
// still there.
func (l *labProcess) checkLeftovers(t *testing.T) {
	t.Helper()
	if len(l.rep.Namespaces) != 3 {
		t.Errorf("the lab's namespaces are not known (%v): nothing to check them against", l.rep.Namespaces)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range l.rep.Namespaces {
		if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(ns) + `\b`).Match(out) {
			t.Errorf("namespace %s of the lab left behind", ns)
		}
	}
	inst, _ := filepath.Glob(fmt.Sprintf("/sys/kernel/tracing/instances/finproxy-%d-*", l.pid))
	if len(inst) > 0 {
		t.Errorf("tracefs instances of the lab left behind: %v", inst)
	}
}

// namespacesFromLog reads the lab's namespaces from its debug log (-v).
func namespacesFromLog(t *testing.T, log string) []string {
	m := regexp.MustCompile(`msg=lab namespaces=(\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Errorf("no namespaces in the lab's log:\n%s", log)
		return nil
	}
	return strings.Split(m[1], ",")
}

// processesOf lists the processes running one of exes (by /proc/PID/exe).
func processesOf(t *testing.T, exes []string) map[int]string {
	t.Helper()
	out := map[int]string{}
	walkProcs(func(pid int) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && slices.Contains(exes, exe) {
			out[pid] = exe
		}
	})
	return out
}

// processesWithArg lists the processes with arg among their arguments.
func processesWithArg(t *testing.T, arg string) []int {
	t.Helper()
	var out []int
	walkProcs(func(pid int) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && slices.Contains(strings.Split(string(b), "\x00"), arg) {
			out = append(out, pid)
		}
	})
	return out
}

func walkProcs(f func(pid int)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			f(pid)
		}
	}
}

// newProcesses returns the pids in after that were not in before.
func newProcesses(before, after map[int]string) []int {
	var out []int
	for pid := range after {
		if _, ok := before[pid]; !ok {
			out = append(out, pid)
		}
	}
	return out
}

// killPIDs kills processes this test found left by the lab it ran (by pid).
func killPIDs(pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestLabDaemonDetaches: a wrapper starts redis with --daemonize yes (it forks, the
// child calls setsid: it leaves the wrapper's process group) and exits. The lab still ends
// it after each run, as whatever is left in the run's namespaces is the lab's, and says so.
func TestLabDaemonDetaches(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "redis-server")
	t.Parallel()
	d := daemons["redis"]
	port := labPort()
	pidfile := filepath.Join(t.TempDir(), "redis.pid")
	before := processesOf(t, d.exes)
	res := runLabProcess(t, "-c", "lost-final-ack", "--runs", "3", "--port", port,
		"--server", `sh -c "redis-server --bind {server_addr} --port {port} --save '' --appendonly no --protected-mode no --daemonize yes --pidfile `+pidfile+` && echo started"`,
		"--ready", "started", "--client", d.client)
	if res.code != 0 || res.rep.Passed != 3 {
		t.Fatalf("exit %d, %d of 3 runs passed\n%s", res.code, res.rep.Passed, res.out)
	}
	for _, r := range res.rep.Runs {
		// The wrapper exited by itself; the daemon it left was found and ended.
		if r.ServerStop != nil || r.ServerExit != 0 || !slices.ContainsFunc(r.Warnings, func(w string) bool {
			return strings.Contains(w, "(redis-server) was left in the server namespace")
		}) {
			t.Errorf("run %d: server exit %d, stop %+v, warnings %q: want the wrapper's exit 0 and the detached daemon reported", r.Run, r.ServerExit, r.ServerStop, r.Warnings)
		}
	}
	res.checkLeftovers(t)
	if left := newProcesses(before, processesOf(t, d.exes)); len(left) > 0 {
		t.Errorf("detached redis left after the lab: %v", left)
		killPIDs(left)
	}
}

// TestLabKilled: SIGKILL of `lab` (nothing of it can clean up) takes the applications it
// started with it (their parent-death signal), `finproxy run` on the router included, whose
// watchdog then removes its hooks; `finproxy cleanup` removes the namespaces left.
func TestLabKilled(t *testing.T) {
	nstest.RequireRoot(t)
	t.Parallel()
	port := labPort()
	marker := "61." + port
	cmd := exec.Command(finproxyBin, "lab", "-v", "-c", "four-way-close", "--port", port,
		"--server", "{finproxy} app server --listen {server_addr}:{port} --mode echo-close",
		"--client", fmt.Sprintf(`sh -c "trap '' TERM INT; exec sleep %s"`, marker))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(40 * time.Second)
	for !strings.Contains(out.String(), "phase=client") || len(processesWithArg(t, marker)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the client never started:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	namespaces := namespacesFromLog(t, out.String())
	_ = cmd.Process.Kill() // the lab alone, not its group: its children must die by themselves
	_ = cmd.Wait()
	deadline = time.Now().Add(2 * time.Second)
	for len(processesWithArg(t, marker)) > 0 {
		if time.Now().After(deadline) {
			left := processesWithArg(t, marker)
			killPIDs(left)
			t.Fatalf("the client outlived the lab's SIGKILL by 2 s: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// `finproxy run` on the router was given `--port PORT`: it is gone too.
	for len(processesWithArg(t, port)) > 0 {
		if time.Now().After(deadline) {
			left := processesWithArg(t, port)
			killPIDs(left)
			t.Fatalf("finproxy run outlived the lab's SIGKILL by 2 s: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := exec.Command(finproxyBin, "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("finproxy cleanup: %v\n%s", err, c)
	}
	res := &labProcess{pid: cmd.Process.Pid, rep: &scenario.LabReport{Namespaces: namespaces}}
	res.checkLeftovers(t)
}

// TestLabClosedOutput: `finproxy lab ... | head -0` must not kill the lab mid-run (a
// SIGPIPE would leave its namespaces): writes fail, the runs go on, the report is written
// and everything is removed.
func TestLabClosedOutput(t *testing.T) {
	nstest.RequireRoot(t)
	t.Parallel()
	dir := t.TempDir()
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rd.Close() // nobody reads: the lab's first write gets EPIPE (and SIGPIPE)
	cmd := exec.Command(finproxyBin, "lab", "-c", "lost-fin", "--runs", "2", "--port", labPort(), "--report", dir)
	cmd.Stdout, cmd.Stderr = wr, wr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("lab with a closed output: %v (a SIGPIPE kills it before its teardown)", err)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("lab with a closed output did not end")
	}
	var rep scenario.LabReport
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("report.json: %v", err)
	}
	if rep.Passed != 2 {
		t.Errorf("%d of 2 runs passed", rep.Passed)
	}
	res := &labProcess{pid: cmd.Process.Pid, rep: &rep}
	res.checkLeftovers(t)
}
