package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFirstDiff(t *testing.T) {
	if d := firstDiff([]byte("a\nb\nc\n"), []byte("a\nB\nc\n")); !strings.Contains(d, "line 2:") || !strings.Contains(d, "want: b") || !strings.Contains(d, "got: B") {
		t.Errorf("firstDiff: %s", d)
	}
	if d := firstDiff([]byte("a\n"), []byte("a\nb\n")); !strings.Contains(d, "line 2:") {
		t.Errorf("a longer output: %s", d)
	}
}

func TestCheckSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.golden")
	if err := os.WriteFile(path, []byte("same\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Check(t, path, []byte("same\n"))
}
