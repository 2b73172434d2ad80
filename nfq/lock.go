package nfq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// InstallLockPath is the file whose lock makes the overlap check and the install of one
// run a single step among the runs of this host (whatever their network namespace: /run
// is shared by `ip netns exec`).
const InstallLockPath = "/run/finproxy-install.lock"

// LockInstall takes the install lock, waiting while another run holds it (an install
// takes well under a second) until ctx ends. Hold it from before Install to after it:
// two runs started at once then cannot both find the scope free and both hook it.
func LockInstall(ctx context.Context) (unlock func(), err error) {
	return lockFile(ctx, InstallLockPath)
}

func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nfq: open install lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases it
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("nfq: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("nfq: waiting for the install lock %s (another finproxy is installing its hooks): %w", path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
