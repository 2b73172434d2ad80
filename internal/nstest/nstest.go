package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Privileged reports whether CI demands that privileged tests run.
func Privileged() bool { return os.Getenv("FINPROXY_PRIVILEGED") == "1" }

// Skip skips t with reason, or fails it when FINPROXY_PRIVILEGED=1.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Privileged() {
		t.Fatalf("FINPROXY_PRIVILEGED=1 but this test cannot run: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (network namespaces, iptables, NFQUEUE)")
	}
}

// RequireTool skips (or fails in CI) unless the named program is on PATH.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Skip(t, fmt.Sprintf("needs %s on PATH (.ci/run installs it)", name))
	}
}

// NS is a named network namespace (as `ip netns` names it) owned by one test.
type NS struct {
	Name string
}

// New creates a fresh named namespace with loopback up and registers its removal.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "ip")
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	ns := &NS{Name: "fptest-" + hex.EncodeToString(b[:])}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		Skip(t, fmt.Sprintf("cannot create a network namespace: %v: %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("remove namespace %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Command returns cmd to run inside the namespace (through `ip netns exec`).
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Handle opens the namespace; the caller closes it. Its fd suits go-nfqueue's Config.NetNS.
func (ns *NS) Handle() (netns.NsHandle, error) { return netns.GetFromName(ns.Name) }

// Do runs f on an OS thread switched into the namespace. Sockets f creates belong to the
// namespace for their whole life; processes f starts with os/exec inherit it.
func (ns *NS) Do(f func() error) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: if switching back failed it must die with the goroutine.
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("switch back from %s: %w", ns.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
