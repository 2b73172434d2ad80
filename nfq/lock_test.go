package nfq

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestLockInstall: the second taker waits until the first lets go; a taker whose context
// ends stops waiting.
func TestLockInstall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.lock")
	unlock, err := lockFile(context.Background(), path)
	must(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v, want the context's deadline", err)
	}

	got := make(chan time.Time, 1)
	go func() {
		u, err := lockFile(context.Background(), path)
		if err != nil {
			t.Error(err)
		} else {
			u()
		}
		got <- time.Now()
	}()
	time.Sleep(30 * time.Millisecond)
	released := time.Now()
	unlock()
	select {
	case at := <-got:
		if at.Before(released) {
			t.Error("the second taker got the lock before the first let go")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second taker did not get the lock 5s after it was released")
	}
}
