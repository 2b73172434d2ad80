package segment

import (
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the decoded column of testdata/segments.txt")

func TestUpdateGolden(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/segments.txt from the decoder")
	}
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
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
