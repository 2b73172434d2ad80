package segment

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/internal/golden"
)

// TestSegmentsGolden checks the decoded column of testdata/segments.txt against the
// decoder (go test -update rewrites it).
func TestSegmentsGolden(t *testing.T) {
	path := filepath.Join("testdata", "segments.txt")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder()
	var out []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		parts := strings.SplitN(line, " | ", 3)
		if strings.HasPrefix(line, "#") || len(parts) != 3 {
			out = append(out, line)
			continue
		}
		b, _ := hex.DecodeString(parts[1])
		var s Segment
		got := ""
		if err := d.Decode(b, &s); err != nil {
			got = "error: " + err.Error()
		} else {
			got = s.String()
		}
		out = append(out, parts[0]+" | "+parts[1]+" | "+got)
	}
	golden.Check(t, path, []byte(strings.Join(out, "\n")+"\n"))
}
