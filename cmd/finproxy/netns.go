package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// netnsEnv marks a finproxy process that already runs inside the namespace it was asked for.
const netnsEnv = "FINPROXY_NETNS"

// enterNetns makes the rest of the process run inside the named network namespace (as
// `ip netns` names it). It re-executes finproxy through `ip netns exec`, so that every thread,
// every socket (NFQUEUE, sock_diag, raw), every iptables call and /proc/net belong to that
// namespace. The pid stays the same: both exec in place. It returns only on error, or when
// the process is already inside name.
func enterNetns(name string) error {
	if name == "" || os.Getenv(netnsEnv) == name {
		return nil
	}
	if _, err := os.Stat("/run/netns/" + name); err != nil {
		return fmt.Errorf("--netns %s: no such network namespace (see `ip netns list`)", name)
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
	env := append(os.Environ(), netnsEnv+"="+name)
	if err := syscall.Exec(ip, argv, env); err != nil {
		return fmt.Errorf("--netns %s: exec ip netns exec: %w", name, err)
	}
	return nil
}
