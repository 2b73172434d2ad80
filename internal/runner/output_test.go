package runner

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// fullDisk takes limit bytes, then fails as a full disk does (a short write, then ENOSPC).
type fullDisk struct {
	buf   bytes.Buffer
	limit int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	room := d.limit - d.buf.Len()
	if room >= len(p) {
		return d.buf.Write(p)
	}
	d.buf.Write(p[:max(room, 0)])
	return max(room, 0), &os.PathError{Op: "write", Path: "events.jsonl", Err: syscall.ENOSPC}
}

func (d *fullDisk) Close() error { return nil }

// syncBuffer is a log destination read while the run goes on.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A disk that fills up in the middle of the event log: the lines counted as written are
// exactly the whole lines in the file, the others are counted as lost, and the failure
// is logged when it happens, not at the end.
func TestEventLogFullDisk(t *testing.T) {
	disk := &fullDisk{limit: 10000}
	var logs syncBuffer
	l := newEventLog(disk, "events.jsonl", slog.New(slog.NewTextHandler(&logs, nil)))
	const n = 400
	for i := range n {
		l.write(rules.Record{ID: uint32(i), Seq: uint32(i), Rule: "drop-fin", Verdict: rules.Drop})
	}
	// The buffer (64 KiB) holds the 400 lines until the periodic flush meets the full disk.
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "write failed") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "write failed") || !strings.Contains(logs.String(), "no space left") {
		t.Errorf("no warning within 2s of the write error (the flush runs every 100ms): %q", logs.String())
	}
	written, lost, err := l.close()
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("close: %v, want the write error", err)
	}
	whole := uint64(strings.Count(disk.buf.String(), "\n"))
	if whole == 0 || whole == n {
		t.Fatalf("%d whole lines in the file: the test's disk should have cut the log in its middle", whole)
	}
	if written != whole || lost != n-whole {
		t.Errorf("counted %d written and %d lost; the file has %d whole lines of %d", written, lost, whole, n)
	}
	t.Logf("%d lines, %d bytes in the file (%d lost); close: %v", whole, disk.buf.Len(), lost, err)
}

// Run with its event log and its capture on /dev/full: the write error is logged while
// the run goes on, the result counts no line and no packet written (they are all lost),
// and Run's error names the outputs.
func TestRunOutputsOnFullDevice(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	parsed, err := config.Parse([]byte(hotpathConfig), "hotpath.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &parsed.Config
	var logs syncBuffer
	var k *nfq.FakeKernel
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Run(ctx, Options{
			Config: cfg, LogPath: "/dev/full", PcapPath: "/dev/full",
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			IPT4:   nfq.NewFake(),
			Ready:  func() { close(ready) },
			OpenQueue: func(ctx context.Context, c nfq.Config, hd nfq.Handler) (*nfq.Queue, error) {
				q, fk, err := nfq.OpenFake(ctx, c, hd)
				k = fk
				return q, err
			},
		})
		done <- outcome{res, err}
	}()
	select {
	case <-ready:
	case o := <-done:
		t.Fatalf("Run ended before it was ready: %v", o.err)
	}
	h := &hotpath{k: k, buf: make([]byte, 140)}
	const conns = 50
	for i := range conns {
		h.send(hpClient, hpServer, uint16(40000+i), 8080, 1, 0, tSYN, 0)
		h.send(hpClient, hpServer, uint16(40000+i), 8080, 2, 1, tFIN|tACK, 0)
	}
	deadline := time.Now().Add(3 * time.Second)
	for strings.Count(logs.String(), "write failed") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	for _, want := range []string{"event log: write failed", "pcap: write failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q while the run went on:\n%s", want, out)
		}
	}
	cancel()
	o := <-done
	if o.err == nil || !strings.Contains(o.err.Error(), "event log") || !strings.Contains(o.err.Error(), "pcap") {
		t.Errorf("Run's error %v, want one naming the event log and the capture", o.err)
	}
	if o.res == nil {
		t.Fatal("no result")
	}
	if o.res.Records != 0 || o.res.RecordsLost != 2*conns || o.res.PcapPackets != 0 || o.res.PcapLost != 2*conns {
		t.Errorf("records %d written, %d lost; packets %d written, %d lost; want 0, %d, 0, %d",
			o.res.Records, o.res.RecordsLost, o.res.PcapPackets, o.res.PcapLost, 2*conns, 2*conns)
	}
}
