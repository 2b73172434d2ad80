package observe

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
)

// traceLines are the recorded lines of testdata/trace: seeds and benchmark input.
func traceLines(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob("testdata/trace/*.txt")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no fixtures: %v", err)
	}
	var lines []string
	for _, f := range files {
		in, err := os.Open(f)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		in.Close()
	}
	return lines
}

// FuzzSplitHeader: wherever splitHeader answers, it answers as lineRE, the definition of
// the format; and ParseLine never panics.
func FuzzSplitHeader(f *testing.F) {
	for _, l := range traceLines(f) {
		f.Add(l)
	}
	f.Add("  a b (  12) [003] d..2. 1.000000001: inet_sock_set_state: family=AF_INET")
	f.Add(" (12) [001] 5.5: x: y")
	f.Add("t-1 [1] [002] 1.2: n:body")
	f.Fuzz(func(t *testing.T, line string) {
		h, ok := splitHeader(line)
		m := lineRE.FindStringSubmatch(line)
		if ok {
			if m == nil {
				t.Fatalf("splitHeader split %q, lineRE does not match it: %+v", line, h)
			}
			want := header{task: m[1], cpu: m[2], sec: m[3], frac: m[4], name: m[5], body: m[6]}
			if h != want {
				t.Fatalf("%q:\nsplitHeader %+v\nlineRE      %+v", line, h, want)
			}
		}
		_, _ = ParseLine(line)
	})
}

// Every recorded line that lineRE matches takes the fast path.
func TestSplitHeaderTakesRecordedLines(t *testing.T) {
	for _, l := range traceLines(t) {
		if lineRE.MatchString(l) {
			if _, ok := splitHeader(l); !ok {
				t.Errorf("splitHeader leaves %q to lineRE", l)
			}
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	lines := traceLines(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, _ = ParseLine(lines[i%len(lines)])
	}
}
