package observe

import (
	"os"
	"path/filepath"
	"testing"
)

// A fake /proc: the owner of a socket inode is found by its fd links, the lowest pid
// when several processes share it; other links and processes without sockets are
// skipped.
func TestOwnersLookup(t *testing.T) {
	root := t.TempDir()
	proc := func(pid, comm string, links ...string) {
		fd := filepath.Join(root, pid, "fd")
		if err := os.MkdirAll(fd, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for i, l := range links {
			if err := os.Symlink(l, filepath.Join(fd, string(rune('0'+i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	proc("300", "forked", "socket:[11]", "socket:[33]")
	proc("200", "server", "socket:[11]", "socket:[22]", "pipe:[5]")
	proc("400", "idle", "/dev/null")
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := &Owners{ProcRoot: root}
	for _, c := range []struct {
		inode uint32
		want  Process
		ok    bool
	}{
		{11, Process{Pid: 200, Comm: "server"}, true},
		{22, Process{Pid: 200, Comm: "server"}, true},
		{33, Process{Pid: 300, Comm: "forked"}, true},
		{5, Process{}, false},
		{0, Process{}, false},
	} {
		if p, ok := o.Lookup(c.inode); p != c.want || ok != c.ok {
			t.Errorf("Lookup(%d) = %+v, %v; want %+v, %v", c.inode, p, ok, c.want, c.ok)
		}
	}
}
