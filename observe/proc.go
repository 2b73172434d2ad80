package observe

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Process is a process holding a socket.
type Process struct {
	Pid  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Owners maps socket inodes to the processes holding them, by scanning the links in
// /proc/PID/fd ("socket:[INODE]"). Processes of every network namespace are visible
// there (one pid namespace). A scan is done lazily, when an inode is asked for that the
// last scan did not see, and at most once per MinInterval. When several processes share
// the socket (fork), the lowest pid is reported.
type Owners struct {
	// ProcRoot is the proc mount ("/proc" if empty).
	ProcRoot string
	// MinInterval is the least time between two scans (100 ms if zero).
	MinInterval time.Duration

	mu sync.Mutex
	// byInode indexes procs by socket inode: a scan finds tens of thousands of sockets
	// held by a few processes.
	byInode  map[uint32]int32
	procs    []Process
	lastScan time.Time
}

// Lookup returns the process holding the socket with this inode; ok is false when no
// process has it open (or inode is 0: timewait, request and orphaned sockets).
func (o *Owners) Lookup(inode uint32) (p Process, ok bool) {
	if inode == 0 {
		return Process{}, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if i, ok := o.byInode[inode]; ok {
		return o.procs[i], true
	}
	every := o.MinInterval
	if every == 0 {
		every = 100 * time.Millisecond
	}
	if !o.lastScan.IsZero() && time.Since(o.lastScan) < every {
		return Process{}, false
	}
	o.byInode, o.procs = scanSocketOwners(o.procRoot())
	o.lastScan = time.Now()
	if i, ok := o.byInode[inode]; ok {
		return o.procs[i], true
	}
	return Process{}, false
}

func (o *Owners) procRoot() string {
	if o.ProcRoot == "" {
		return "/proc"
	}
	return o.ProcRoot
}

// scanSocketOwners reads every /proc/PID/fd; processes that vanish or cannot be read are
// skipped.
func scanSocketOwners(proc string) (map[uint32]int32, []Process) {
	m := map[uint32]int32{}
	var procs []Process
	ents, err := os.ReadDir(proc)
	if err != nil {
		return m, procs
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(proc, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		pi := int32(-1) // this process's index in procs, once it holds a socket
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := socketInode(l)
			if !ok {
				continue
			}
			if old, seen := m[inode]; seen && procs[old].Pid < pid {
				continue
			}
			if pi < 0 {
				b, _ := os.ReadFile(filepath.Join(proc, e.Name(), "comm"))
				procs = append(procs, Process{Pid: pid, Comm: strings.TrimSpace(string(b))})
				pi = int32(len(procs) - 1)
			}
			m[inode] = pi
		}
	}
	return m, procs
}

// socketInode parses a /proc/PID/fd link "socket:[12345]".
func socketInode(link string) (uint32, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}
