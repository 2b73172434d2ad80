package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Process is a process found in one of the lab's namespaces.
type Process struct {
	Pid  int
	Comm string
}

// Processes lists the processes whose network namespace is role's: whatever the lab
// started there and everything those forked, including what left its process group
// (a daemon that detached with setsid). Processes of other namespaces are never listed.
func (t *Topology) Processes(role string) ([]Process, error) {
	t.mu.RLock()
	h, ok := t.handles[role]
	closed := t.closed
	t.mu.RUnlock()
	if !ok || closed {
		return nil, fmt.Errorf("lab: processes: unknown role %q or topology closed", role)
	}
	var want unix.Stat_t
	if err := unix.Fstat(int(h), &want); err != nil {
		return nil, fmt.Errorf("lab: processes: the %s namespace: %w", role, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Dev != want.Dev || st.Ino != want.Ino {
			continue // gone, a kernel thread, or another namespace
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out = append(out, Process{Pid: pid, Comm: strings.TrimSpace(string(comm))})
	}
	return out, nil
}
