package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// enterNetns makes the rest of the process run inside the named network namespace (as
// `ip netns` names it). It re-executes finproxy through `ip netns exec`, so that every thread,
// every socket (NFQUEUE, sock_diag, raw), every iptables call and /proc/net belong to that
// namespace. The pid stays the same: both exec in place. It returns only on error, or when
// the process is already inside name: that is read from the kernel (the namespace's inode),
// never from the environment, which a user's shell may have carried over from another run.
func enterNetns(name string) error {
	if name == "" {
		return nil
	}
	var want, cur syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &want); err != nil {
		return fmt.Errorf("--netns %s: no such network namespace (see `ip netns list`)", name)
	}
	if err := syscall.Stat("/proc/self/ns/net", &cur); err != nil {
		return fmt.Errorf("--netns %s: read own network namespace: %w", name, err)
	}
	if cur.Dev == want.Dev && cur.Ino == want.Ino {
		return nil
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("--netns needs the ip command (iproute2): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--netns: find own executable: %w", err)
	}
	argv := append([]string{"ip", "netns", "exec", name, self}, os.Args[1:]...)
	if err := syscall.Exec(ip, argv, os.Environ()); err != nil {
		return fmt.Errorf("--netns %s: exec ip netns exec: %w", name, err)
	}
	return nil
}
