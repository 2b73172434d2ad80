package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/configs"
)

// runCLI runs the finproxy command line in-process and returns its output and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		code = 1
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		}
		if err.Error() != "" {
			out.WriteString(err.Error() + "\n")
		}
	}
	return out.String(), code
}

// `finproxy check` on each bad config prints the golden error (with file:line:col) and
// exits 1.
func TestCheckBadConfigs(t *testing.T) {
	dir := filepath.Join("..", "..", "config", "testdata")
	bad, err := filepath.Glob(filepath.Join(dir, "bad", "*.toml"))
	if err != nil || len(bad) == 0 {
		t.Fatalf("no bad configs in %s: %v", dir, err)
	}
	for _, path := range bad {
		name := strings.TrimSuffix(filepath.Base(path), ".toml")
		t.Run(name, func(t *testing.T) {
			golden, err := os.ReadFile(strings.TrimSuffix(path, ".toml") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			// The goldens name files relative to config/: run check from there.
			t.Chdir(filepath.Join("..", "..", "config"))
			out, code := runCLI(t, "check", "-c", filepath.Join("testdata", "bad", name+".toml"))
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			want := string(golden)
			if strings.TrimSpace(out) != strings.TrimSpace(want) {
				t.Errorf("finproxy check printed:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

// Every preset passes check, by path and by built-in name.
func TestCheckPresets(t *testing.T) {
	for _, name := range configs.Names() {
		for _, arg := range []string{name, filepath.Join("..", "..", "configs", name+".toml")} {
			out, code := runCLI(t, "check", "-c", arg)
			if code != 0 || !strings.Contains(out, ": ok: ") {
				t.Errorf("check -c %s: exit %d\n%s", arg, code, out)
			}
		}
	}
}

func TestCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"check"}, 2, "-c CONFIG is required"},
		{[]string{"check", "-c", "no-such-preset"}, 1, "no such file, and no built-in preset"},
		{[]string{"check", "-c", "lost-fin", "--hook", "sideways"}, 1, `--hook "sideways": want local or forward`},
		{[]string{"run", "-c", "lost-fin", "--hook", "sideways"}, 2, `--hook "sideways"`},
	} {
		out, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

// A target of several ports is printed whole.
func TestCheckPorts(t *testing.T) {
	out, code := runCLI(t, "check", "-c", filepath.Join("..", "..", "config", "testdata", "good", "ports.toml"))
	if code != 0 || !strings.Contains(out, "port 6379, 8080,") {
		t.Errorf("check of a two-port target: exit %d\n%s", code, out)
	}
}
