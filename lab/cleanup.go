package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per live topology. The process that made a topology holds
// an exclusive flock(2) on its file until Close; the kernel drops the lock when that
// process dies, which is how Cleanup tells a crashed run from a live one.
const lockDir = "/run/finproxy/lab"

// DefaultPrefix is the name prefix of lab namespaces when Options.Prefix is empty.
const DefaultPrefix = "fp"

var prefixRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

func checkPrefix(prefix string) (string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(prefix) {
		return "", fmt.Errorf("lab: prefix %q: want 1 to 16 lower-case letters or digits", prefix)
	}
	return prefix, nil
}

func nsName(prefix, id, role string) string { return prefix + "-" + id + "-" + role }

func lockPath(prefix, id string) string {
	return filepath.Join(lockDir, prefix+"-"+id+".lock")
}

// runLock is the held lock of a live topology.
type runLock struct {
	f    *os.File
	path string
}

// acquireLock creates and locks the lock file of a new run.
func acquireLock(prefix, id string) (*runLock, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: lock directory: %w", err)
	}
	p := lockPath(prefix, id)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(p)
		return nil, fmt.Errorf("lab: lock %s: %w", p, err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return &runLock{f: f, path: p}, nil
}

// release removes the lock file, then drops the lock.
func (l *runLock) release() error {
	err := os.Remove(l.path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, l.f.Close())
}

// Cleanup removes the namespaces left behind by runs with this name prefix ("" means
// DefaultPrefix) whose process died without calling Close, and returns the names it
// removed. Namespaces of runs that are still alive (in this or another process) are left
// alone, so Cleanup is safe to call while other topologies are in use. The veths of a
// removed namespace are deleted by the kernel with it.
func Cleanup(prefix string) ([]string, error) {
	prefix, err := checkPrefix(prefix)
	if err != nil {
		return nil, err
	}
	nsRE := regexp.MustCompile(`^` + prefix + `-([0-9a-f]{8})-(client|router|server)$`)
	lockRE := regexp.MustCompile(`^` + prefix + `-([0-9a-f]{8})\.lock$`)

	ids := map[string][]string{} // run id -> its namespaces
	names, err := listNS()
	if err != nil {
		return nil, fmt.Errorf("lab: list namespaces: %w", err)
	}
	for _, n := range names {
		if m := nsRE.FindStringSubmatch(n); m != nil {
			ids[m[1]] = append(ids[m[1]], n)
		}
	}
	ents, err := os.ReadDir(lockDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: list lock files: %w", err)
	}
	for _, e := range ents {
		if m := lockRE.FindStringSubmatch(e.Name()); m != nil {
			if _, ok := ids[m[1]]; !ok {
				ids[m[1]] = nil
			}
		}
	}

	var removed []string
	var errs []error
	for id, nss := range ids {
		r, err := cleanupRun(prefix, id, nss)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// cleanupRun removes the namespaces nss and the lock file of run id, unless the run's
// lock is held by a live process.
func cleanupRun(prefix, id string, nss []string) ([]string, error) {
	p := lockPath(prefix, id)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// No lock file: a run that crashed before creating its namespaces' lock cannot
		// exist (the lock comes first), so these namespaces are orphans, or a Close
		// finished between our listing and now.
	case err != nil:
		return nil, fmt.Errorf("lab: open %s: %w", p, err)
	default:
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil // live run
			}
			return nil, fmt.Errorf("lab: lock %s: %w", p, err)
		}
	}
	var removed []string
	var errs []error
	for _, n := range nss {
		ok, err := deleteNS(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
		if ok {
			removed = append(removed, n)
		}
	}
	if f != nil && len(errs) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return removed, errors.Join(errs...)
}
