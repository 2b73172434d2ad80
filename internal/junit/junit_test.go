package junit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "junit.xml")
	err := Write(path, Suite{Name: "s", Time: 1.5, Cases: []Case{
		{Name: "a", Classname: "c", Time: 1},
		{Name: "b", Classname: "c", Failure: &Failure{Message: "m", Text: "m\n<x>"}, SystemOut: "out"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="s" tests="2" failures="1" time="1.5">
    <testcase name="a" classname="c" time="1"></testcase>
    <testcase name="b" classname="c" time="0">
      <failure message="m">m&#xA;&lt;x&gt;</failure>
      <system-out>out</system-out>
    </testcase>
  </testsuite>
</testsuites>
`
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}
	if !strings.Contains(string(b), `tests="2" failures="1"`) {
		t.Error("counts")
	}
}
