package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
)

// runCLIIn runs the command line in-process with stdin in and context ctx, and returns
// its output, exit code and how long it took.
func runCLIIn(ctx context.Context, in io.Reader, args ...string) (string, int, time.Duration) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(in)
	root.SetArgs(args)
	start := time.Now()
	err := root.ExecuteContext(ctx)
	took := time.Since(start)
	code := 0
	if err != nil {
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		out.WriteString(err.Error() + "\n")
	}
	return out.String(), code, took
}

// check refuses at once, with the reason, a config that is not a regular file or is too
// large; -c - reads stdin, bounded the same way. Before, check -c /dev/zero read until the
// memory ran out and check -c FIFO waited forever for a writer.
func TestCheckConfigInput(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# comment\n"), config.MaxConfigSize/10+1), 0o644); err != nil {
		t.Fatal(err)
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	preset, _, _ := configs.Read("lost-fin")
	for _, tc := range []struct {
		name string
		in   io.Reader
		args []string
		code int
		want string
	}{
		{"device", nil, []string{"check", "-c", "/dev/zero"}, 1, "config /dev/zero: a character device, not a regular file"},
		{"fifo", nil, []string{"check", "-c", fifo}, 1, "a FIFO (named pipe), not a regular file"},
		{"directory", nil, []string{"check", "-c", dir}, 1, "a directory, not a regular file"},
		{"too large", nil, []string{"check", "-c", big}, 1, "65540 bytes: a config file is at most 64 KiB"},
		{"stdin", bytes.NewReader(preset), []string{"check", "-c", "-"}, 0, `<stdin>: ok: "lost-fin", 1 rules`},
		{"stdin error", strings.NewReader("target.port = 1\nseed = 'x'\n"), []string{"check", "-c", "-"}, 1, "<stdin>:2:8: seed: must be an integer"},
		{"endless stdin", zero, []string{"check", "-c", "-"}, 1, "config <stdin>: more than 64 KiB"},
		{"run stdin and netns", bytes.NewReader(preset), []string{"run", "-c", "-", "--netns", "x"}, 2, "-c - and --netns"},
		{"lab stdin", bytes.NewReader(preset), []string{"lab", "-c", "-"}, 2, "lab: -c -: each run's finproxy reads the config again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			out, code, took := runCLIIn(ctx, tc.in, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("%v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out, tc.code, tc.want)
			}
			if took > time.Second {
				t.Errorf("%v took %v", tc.args, took)
			}
		})
	}
}

// Loading ends as soon as the command's context does (Ctrl-C, SIGTERM), even while stdin
// gives nothing.
func TestLoadInterrupted(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	for _, cmd := range []string{"check", "run"} {
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(100*time.Millisecond, func() { cancel(errors.New("interrupt signal received")) })
		out, code, took := runCLIIn(ctx, r, cmd, "-c", "-")
		if code == 0 || !strings.Contains(out, "config <stdin>: not loaded: interrupt signal received") {
			t.Errorf("%s: exit %d, output:\n%s", cmd, code, out)
		}
		if took > time.Second {
			t.Errorf("%s: returned %v after it started, 100 ms after the interruption was due", cmd, took)
		}
	}
}

// finproxyProcessEnv carries the arguments of TestFinproxyProcess, a JSON array.
const finproxyProcessEnv = "FINPROXY_TEST_PROCESS_ARGS"

// TestFinproxyProcess is not a test of its own: the tests that need finproxy as a process
// (signals, exit status) run the test binary with it and finproxyProcessEnv set, and it
// runs main with those arguments.
func TestFinproxyProcess(t *testing.T) {
	args, ok := os.LookupEnv(finproxyProcessEnv)
	if !ok {
		t.Skip("runs finproxy's main for the tests that start it as a process")
	}
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		t.Fatal(err)
	}
	os.Args = append([]string{"finproxy"}, argv...)
	main()
	os.Exit(0)
}

// finproxyProcess returns a command that runs finproxy with args in a process of its own.
func finproxyProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestFinproxyProcess$")
	argv, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), finproxyProcessEnv+"="+string(argv))
	return cmd
}

// SIGINT, SIGTERM and SIGHUP end finproxy within a second while it waits for its config
// on stdin (before, signals were caught but nothing looked at them until the config was
// read: a FIFO kept check running for 603 s through them).
func TestSignalWhileLoading(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := finproxyProcess(t, "check", "-c", "-")
			stdin, err := cmd.StdinPipe() // kept open, never written: the config never comes
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				t.Fatalf("finproxy ended before the signal (%v):\n%s", err, out.String())
			case <-time.After(300 * time.Millisecond): // it waits on stdin by now
			}
			sent := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "not loaded: ") {
					t.Errorf("after %v: %v, output:\n%s", sig, err, out.String())
				}
				t.Logf("ended %v after %v", time.Since(sent).Round(time.Millisecond), sig)
			case <-time.After(time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("finproxy still running 1 s after %v:\n%s", sig, out.String())
			}
		})
	}
}
