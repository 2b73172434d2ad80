package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Outputs that cannot be written fail the command at once, naming the flag, with exit
// status 2: before root is checked, a namespace entered or anything installed (the
// namespace given here does not exist, so that the command could not run anyway).
func TestOutputsCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	under := filepath.Join(file, "x") // a path under a regular file: ENOTDIR, also for root
	ok := filepath.Join(dir, "ok")
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"run", "-c", "lost-fin", "--netns", "fp-no-such-ns", "--log", under}, "--log"},
		{[]string{"run", "-c", "lost-fin", "--netns", "fp-no-such-ns", "--pcap", under}, "--pcap"},
		{[]string{"run", "-c", "lost-fin", "--netns", "fp-no-such-ns", "--log", ok + ".jsonl", "--report", under}, "--report"},
		{[]string{"run", "-c", "lost-fin", "--netns", "fp-no-such-ns", "--report", dir}, "--report"},
		{[]string{"lab", "-c", "lost-fin", "--report", under}, "--report"},
		{[]string{"lab", "-c", "lost-fin", "--report", ok, "--junit", under}, "--junit"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := newRoot()
			root.SetArgs(tc.args)
			start := time.Now()
			err := root.Execute()
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("error %v (%T), want exit status 2 and a message naming %s", err, err, tc.flag)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %v: the check must come before anything runs", took)
			}
			t.Log(err)
		})
	}
	// The outputs that could be written were created, empty.
	for _, p := range []string{ok + ".jsonl", ok} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
