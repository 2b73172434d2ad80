package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as iproute2 and vishvananda/netns agree.
const netnsDir = "/run/netns"

// inNS runs f on a locked OS thread switched into the namespace h (or left where it is
// when h is netns.None(), for f that moves its thread itself), then switches the thread
// back. Sockets f creates stay in h for their whole life, and may be used from any
// goroutine afterwards. If the thread cannot be switched back it is not unlocked, so the
// Go runtime discards it with the goroutine.
func inNS(h netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if h.IsOpen() {
			if err := netns.Set(h); err != nil {
				runtime.UnlockOSThread()
				errc <- fmt.Errorf("enter namespace: %w", err)
				return
			}
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("switch back to the original namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// createNS creates the named namespace name (bind-mounted under /run/netns, so that
// `ip netns` sees it) and returns a handle to it. The calling goroutine's thread is not
// affected.
func createNS(name string) (netns.NsHandle, error) {
	var h netns.NsHandle
	err := inNS(netns.None(), func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		// NewNamed may leave the (unmounted) file behind when the mount fails. The name
		// carries a fresh random id, so a file of that name can only be ours.
		_, _ = deleteNS(name)
		return netns.None(), fmt.Errorf("create namespace %s: %w", name, err)
	}
	return h, nil
}

// deleteNS removes the named namespace: unmounts it and removes its file, and reports
// whether there was anything to remove. A namespace that is already gone is not an error.
// The kernel frees the namespace (and deletes the veths in it) once no process, socket or
// open handle refers to it any more.
func deleteNS(name string) (bool, error) {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("remove %s: %w", p, err)
	}
	return true, nil
}

// listNS returns the names of the named namespaces.
func listNS() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}
