package observe

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// A process holds four sockets: a listener and a connection in the TCP table, a unix
// socket, and one no table lists (a TCP socket the kernel closed, by a reset, that the
// application never closed): only that one is reported.
func TestHeldClosedSockets(t *testing.T) {
	got, err := HeldClosedSockets("testdata/held", 4242)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []uint32{1004}) {
		t.Errorf("held closed sockets %v, want [1004]", got)
	}
	if _, err := HeldClosedSockets("testdata/held", 4243); err == nil {
		t.Error("no error for a process that is not there")
	}
}

// The inode column is found by its header in every table's layout.
func TestTableInodes(t *testing.T) {
	m := map[uint32]bool{}
	for _, f := range []string{"tcp", "unix"} {
		if err := tableInodes("testdata/held/4242/net/"+f, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range []uint32{1001, 1002, 1003} {
		if !m[in] {
			t.Errorf("inode %d not read (read %v)", in, m)
		}
	}
	if len(m) != 3 {
		t.Errorf("read %v, want 1001 to 1003", m)
	}
}

// On this machine's /proc: a socket reset by its peer and never closed is found, live
// sockets (a listener, an open connection) are not.
func TestHeldClosedSocketsLive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	open, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	reset, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer reset.Close()
	for range 2 {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.RemoteAddr().String() == reset.LocalAddr().String() {
			_ = c.(*net.TCPConn).SetLinger(0) // close sends a RST
			c.Close()
		}
	}
	// The RST has reached reset's socket once a read says so.
	_ = reset.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := reset.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read on the reset connection: %v, want ECONNRESET", err)
	}
	got, err := HeldClosedSockets("", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := inodeOf(t, reset)
	if !slices.Equal(got, []uint32{want}) {
		t.Errorf("held closed sockets %v, want [%d] (the reset connection's)", got, want)
	}
}

func inodeOf(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var inode uint32
	_ = raw.Control(func(fd uintptr) {
		l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err == nil {
			inode, _ = socketInode(l)
		}
	})
	if inode == 0 {
		t.Fatal("no inode")
	}
	return inode
}
