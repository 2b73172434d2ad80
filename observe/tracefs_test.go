package observe

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
)

func TestRemoveStaleInstances(t *testing.T) {
	dir := t.TempDir()
	self := os.Getpid()
	names := map[string]bool{ // name: whether it must be removed
		InstancePrefix + "4000000-1": true,  // dead process
		InstancePrefix + "4000001":   true,  // dead process, no sequence number
		InstancePrefix + "4000002-3": false, // alive per the stub
		InstancePrefix + "0-1":       false, // not a pid
		"someone-else-4000000":       false, // not ours
		InstancePrefix + "x-1":       false, // not ours
	}
	names[InstancePrefix+strconv.Itoa(self)+"-7"] = false // this process
	for n := range names {
		if err := os.Mkdir(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	alive := func(pid int) bool { return pid == 4000002 || pid == self }
	removed, err := removeStaleInstances(dir, alive)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for n, gone := range names {
		_, serr := os.Stat(filepath.Join(dir, n))
		if gone != os.IsNotExist(serr) {
			t.Errorf("%s: removed=%v, want %v", n, os.IsNotExist(serr), gone)
		}
		if gone {
			want = append(want, filepath.Join(dir, n))
		}
	}
	slices.Sort(want)
	slices.Sort(removed)
	if !slices.Equal(removed, want) {
		t.Errorf("reported %q, want %q", removed, want)
	}

	// A second pass finds nothing; a missing directory is not an error.
	if again, err := removeStaleInstances(dir, alive); err != nil || len(again) != 0 {
		t.Errorf("second pass: %q, %v", again, err)
	}
	if none, err := removeStaleInstances(filepath.Join(dir, "missing"), alive); err != nil || none != nil {
		t.Errorf("missing dir: %q, %v", none, err)
	}
}

// An instance that another process is removing at the same moment (tracefs answers
// ENODEV) is gone, not an error: cleanup beside starting observers.
func TestRemoveStaleInstancesRace(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, InstancePrefix+"2147483646-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	orig := removeInstance
	t.Cleanup(func() { removeInstance = orig })
	removeInstance = func(string) error { return &os.PathError{Op: "remove", Err: syscall.ENODEV} }
	removed, err := removeStaleInstances(dir, func(int) bool { return false })
	if err != nil || len(removed) != 0 {
		t.Errorf("removed %v, err %v; want nothing and no error", removed, err)
	}
	removeInstance = func(string) error { return &os.PathError{Op: "remove", Err: syscall.EBUSY} }
	if _, err := removeStaleInstances(dir, func(int) bool { return false }); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("another error: %v, want EBUSY reported", err)
	}
}
