package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vishvananda/netns"
)

// Only net.* keys are accepted: they are the ones the kernel keeps per network namespace,
// so writing them inside a lab namespace cannot change the host. (The few net.* keys that
// are global, such as net.core.rmem_max, are not visible inside a non-initial namespace
// at all, and writing them fails.)
var sysctlKeyRE = regexp.MustCompile(`^net[./][A-Za-z0-9_./:-]+$`)

// sysctlPath maps a sysctl key to its file under /proc/sys. Keys use dots
// ("net.ipv4.tcp_fin_timeout") or, as sysctl(8) also allows, slashes
// ("net/ipv4/conf/to-router/rp_filter"), which suits interface names with dots in them.
func sysctlPath(key string) (string, error) {
	if !sysctlKeyRE.MatchString(key) || strings.Contains(key, "..") || strings.Contains(key, "//") {
		return "", fmt.Errorf("sysctl key %q: only net.* keys are supported", key)
	}
	rel := key
	if !strings.Contains(key, "/") {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", rel), nil
}

// normSysctl compares values the way sysctl(8) prints them: fields separated by tabs.
func normSysctl(v string) string { return strings.Join(strings.Fields(v), " ") }

// writeSysctls writes key=value pairs inside the namespace h, in the given order, and reads
// each one back to check that the kernel took it.
func writeSysctls(h netns.NsHandle, kv [][2]string) error {
	if len(kv) == 0 {
		return nil
	}
	return inNS(h, func() error {
		for _, e := range kv {
			key, val := e[0], e[1]
			p, err := sysctlPath(key)
			if err != nil {
				return err
			}
			// /proc/sys/net resolves to the namespace of the thread that opens it.
			if err := os.WriteFile(p, []byte(val+"\n"), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("sysctl %s: read back: %w", key, err)
			}
			if normSysctl(string(got)) != normSysctl(val) {
				return fmt.Errorf("sysctl %s=%s: kernel kept %q", key, val, strings.TrimSpace(string(got)))
			}
		}
		return nil
	})
}
