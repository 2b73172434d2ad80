package observe

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketTables are the /proc/PID/net files that list a namespace's sockets with their
// inodes: every socket a process can hold, except a TCP socket that has left the
// tables, that is one closed by the kernel (a reset, a timeout) that its process has
// not closed yet.
var socketTables = []string{"tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6",
	"icmp", "icmp6", "unix", "netlink", "packet"}

// HeldClosedSockets returns the inodes of the sockets process pid holds (its
// /proc/PID/fd) that no table of its network namespace lists (/proc/PID/net/tcp, unix,
// ...): sockets whose connection the kernel ended (a reset received, a retransmission
// timeout) while the application never called close(). Each such file descriptor is a
// leak the CLOSE_WAIT detector cannot see. Other socket families (SCTP, vsock, ...) would
// also be listed: compare with a reading taken before the connections of interest.
func HeldClosedSockets(procRoot string, pid int) ([]uint32, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return nil, fmt.Errorf("held sockets of %d: %w", pid, err)
	}
	var held []uint32
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil {
			if inode, ok := socketInode(l); ok {
				held = append(held, inode)
			}
		}
	}
	if len(held) == 0 {
		return nil, nil
	}
	listed := map[uint32]bool{}
	for _, t := range socketTables {
		if err := tableInodes(filepath.Join(dir, "net", t), listed); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("held sockets of %d: %w", pid, err)
		}
	}
	var out []uint32
	for _, in := range held {
		if !listed[in] {
			out = append(out, in)
		}
	}
	return out, nil
}

// tableInodes adds the inodes of a /proc/net socket table to m. The inode is the column
// headed "inode" (or "Inode"); the first line is the header.
func tableInodes(path string, m map[uint32]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	col := -1
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if col < 0 {
			for i, h := range fields {
				if strings.EqualFold(h, "inode") {
					col = i
				}
			}
			if col < 0 {
				return fmt.Errorf("%s: no inode column in %q", path, sc.Text())
			}
			continue
		}
		// The IP tables' header has two words ("tx_queue rx_queue", "tr tm->when")
		// where each row has one field ("00000000:00000000", "00:00000000").
		i := col
		if isIPTable(path) {
			i = col - 2
		}
		if i < len(fields) {
			if n, err := strconv.ParseUint(fields[i], 10, 32); err == nil {
				m[uint32(n)] = true
			}
		}
	}
	return sc.Err()
}

func isIPTable(path string) bool {
	switch filepath.Base(path) {
	case "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "icmp", "icmp6":
		return true
	}
	return false
}
