// Package golden is the tests' one way to compare an output with a file that holds it
// (testdata/*.golden): `go test ./PKG -update` rewrites the files from the current output,
// to be read in the diff before it is committed.
package golden

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files (testdata/*.golden) from the current output")

// Update reports whether the test runs with -update.
func Update() bool { return *update }

// Check compares got with the golden file at path. With -update it writes got to path
// first. On a difference it fails t at the first line that differs, and says how to
// update the file.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (go test -update writes it)", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	t.Errorf("%s differs (go test -update rewrites it, after checking the change):\n%s", path, firstDiff(want, got))
}

// firstDiff describes the first line where want and got differ.
func firstDiff(want, got []byte) string {
	wl, gl := bytes.Split(want, []byte("\n")), bytes.Split(got, []byte("\n"))
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g []byte
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if !bytes.Equal(w, g) || i >= len(wl) || i >= len(gl) {
			return fmt.Sprintf("line %d:\n  want: %s\n   got: %s", i+1, w, g)
		}
	}
	return "(no line differs: line endings?)"
}
