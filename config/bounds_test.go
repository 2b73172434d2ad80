package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// deepSources are configs nested n+1 levels deep (a key and n more) in each way TOML nests.
func deepSources(n int) map[string]string {
	return map[string]string{
		"arrays": "a = " + strings.Repeat("[", n) + "1" + strings.Repeat("]", n) + "\n",
		"inline": "a = " + strings.Repeat("{b=", n) + "1" + strings.Repeat("}", n) + "\n",
		"dotted": "a" + strings.Repeat(".b", n) + " = 1\n",
		"header": "[a" + strings.Repeat(".b", n) + "]\n",
	}
}

// A config nested deeper than MaxDepth is refused before the TOML parser sees it, with the
// place where it goes too deep, at a cost that does not grow with the depth. Before the
// depth check, 8,000 nested inline tables (32 KB) cost the locator 2.4 GB and the parser
// 7.5 GB.
func TestParseTooDeep(t *testing.T) {
	// Where piece MaxDepth+1 is written, for each shape.
	want := map[string]string{
		"arrays": fmt.Sprintf("x.toml:1:%d: a[1][1][1]…: nested more than %d levels deep", 5+MaxDepth, MaxDepth),
		"inline": fmt.Sprintf("x.toml:1:%d: a.b.b.b…: nested more than %d levels deep", 6+3*(MaxDepth-1), MaxDepth),
		"dotted": fmt.Sprintf("x.toml:1:%d: a.b.b.b…: nested more than %d levels deep", 3+2*(MaxDepth-1), MaxDepth),
		"header": fmt.Sprintf("x.toml:1:%d: a.b.b.b…: nested more than %d levels deep", 4+2*(MaxDepth-1), MaxDepth),
	}
	for _, n := range []int{MaxDepth, 8000} {
		for shape, src := range deepSources(n) {
			t.Run(fmt.Sprintf("%s-%d", shape, n), func(t *testing.T) {
				var err error
				bytes := allocated(func() { _, err = Parse([]byte(src), "x.toml") })
				var errs ConfigErrors
				if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), want[shape]) {
					t.Fatalf("Parse: %v\nwant one error starting %q", err, want[shape])
				}
				if bytes > 1<<20 {
					t.Errorf("Parse allocated %d bytes for a %d byte source", bytes, len(src))
				}
			})
		}
	}
	// MaxDepth deep is no problem of depth.
	for shape, src := range deepSources(MaxDepth - 1) {
		if _, err := Parse([]byte(src), "x.toml"); err != nil && strings.Contains(err.Error(), "levels deep") {
			t.Errorf("%s, %d deep: %v", shape, MaxDepth, err)
		}
	}
}

// Loading costs memory in proportion to the size of the source, whatever its shape: four
// times the source (up to MaxConfigSize) costs at most five times the memory.
func TestParseLinear(t *testing.T) {
	d := MaxDepth - 1
	units := map[string]string{
		"keys":   "k%d = 1\n",
		"arrays": "a%d = " + strings.Repeat("[", d) + "1" + strings.Repeat("]", d) + "\n",
		"inline": "a%d = " + strings.Repeat("{b=", d) + "1" + strings.Repeat("}", d) + "\n",
		"dotted": "a%d" + strings.Repeat(".b", d) + " = 1\n",
		"header": "[a%d" + strings.Repeat(".b", d-1) + "]\nx = 1\n",
		"rules":  "[[rule]]\nname = 'r%d'\naction = 'drop'\nhas_flags = 'FIN'\n",
		"errors": "[[rule]]\nname = 'r%d'\naction = 'dorp'\nside = 'x'\nphase = 'q'\n",
	}
	for name, unit := range units {
		t.Run(name, func(t *testing.T) {
			var cost [2]uint64
			for i, size := range []int{MaxConfigSize / 4, MaxConfigSize} {
				var b strings.Builder
				b.WriteString("target.port = 1\n")
				for k := 0; ; k++ {
					u := fmt.Sprintf(unit, k)
					if b.Len()+len(u) > size {
						break
					}
					b.WriteString(u)
				}
				src := []byte(b.String())
				cost[i] = allocated(func() { _, _ = Parse(src, "x.toml") })
			}
			if cost[1] > 5*cost[0] {
				t.Errorf("%d bytes for %d KiB, %d bytes for %d KiB", cost[0], MaxConfigSize/4>>10, cost[1], MaxConfigSize>>10)
			}
			t.Logf("%s: %d KiB: %.1f MB", name, MaxConfigSize>>10, float64(cost[1])/(1<<20))
		})
	}
}

// A source over MaxConfigSize is refused, where it goes over.
func TestParseTooLarge(t *testing.T) {
	src := "target.port = 1\n" + strings.Repeat("# "+strings.Repeat("x", 97)+"\n", MaxConfigSize/100)
	if _, err := Parse([]byte(src), "big.toml"); err != nil {
		t.Fatalf("%d bytes: %v", len(src), err)
	}
	over := MaxConfigSize - len(src) + 1 // the column of the first byte too many
	src += strings.Repeat("y", 200)
	_, err := Parse([]byte(src), "big.toml")
	want := fmt.Sprintf("big.toml:%d:%d: ", MaxConfigSize/100+2, over)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "a config is at most 65536 (64 KiB)") {
		t.Errorf("Parse: %v, want an error at %s", err, want)
	}
}

// Load reads regular files only, and refuses at once what is not one (it would block or
// never end) or is too large.
func TestLoadFileKinds(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("target.port = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{good, link} {
		if _, err := Load(p); err != nil {
			t.Errorf("Load(%s): %v", p, err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, MaxConfigSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "a FIFO (named pipe), not a regular file"},
		{"/dev/zero", "a character device, not a regular file"},
		{dir, "a directory, not a regular file"},
		{big, "65537 bytes: a config file is at most 64 KiB"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(tc.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Load(%s): %v, want %q", tc.path, err, tc.want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("Load(%s) did not return within 2 s", tc.path)
		}
	}
}

// Read stops reading after MaxConfigSize bytes.
func TestReadLimit(t *testing.T) {
	f, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Read(f, "stdin"); err == nil || !strings.Contains(err.Error(), "config stdin: more than 64 KiB") {
		t.Errorf("Read(/dev/zero): %v", err)
	}
}
