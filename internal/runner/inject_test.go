package runner

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
	"golang.org/x/sys/unix"
)

// The injector sends crafted segments, IPv4 and IPv6, that arrive as they were made
// (a raw TCP socket in the same namespace receives them), from sockets carrying the mark.
func TestInjector(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	err := ns.Do(func() error {
		in, err := openInjector(DefaultInjectMark, true, true)
		if err != nil {
			return err
		}
		defer in.close()
		for _, fd := range []int{in.fd4, in.fd6} {
			if m, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK); err != nil || uint32(m) != DefaultInjectMark {
				t.Errorf("SO_MARK %#x, %v", m, err)
			}
		}
		for _, tc := range []struct {
			family   int
			src, dst string
		}{
			{unix.AF_INET, "127.0.0.1:40000", "127.0.0.1:9"},
			{unix.AF_INET6, "[::1]:40000", "[::1]:9"},
		} {
			rx, err := unix.Socket(tc.family, unix.SOCK_RAW, unix.IPPROTO_TCP)
			if err != nil {
				return err
			}
			defer unix.Close(rx)
			_ = unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
			pkt, err := mutate.Build(mutate.Spec{Src: netip.MustParseAddrPort(tc.src), Dst: netip.MustParseAddrPort(tc.dst),
				Flags: segment.RST | segment.ACK, Seq: 7, Ack: 8})
			if err != nil {
				return err
			}
			if err := in.send(pkt); err != nil {
				t.Errorf("%s: %v", tc.src, err)
				continue
			}
			buf := make([]byte, 1500)
			n, _, err := unix.Recvfrom(rx, buf, 0)
			if err != nil {
				t.Errorf("%s: nothing received: %v", tc.src, err)
				continue
			}
			got := buf[:n]
			if tc.family == unix.AF_INET6 {
				// An IPv6 raw socket receives the payload only.
				if !bytes.Equal(got, pkt[40:]) {
					t.Errorf("received %x, sent %x", got, pkt[40:])
				}
			} else if err := mutate.Check(got); err != nil || !bytes.Equal(got[20:], pkt[20:]) {
				t.Errorf("received %x (%v), sent %x", got, err, pkt)
			}
		}
		if in.sent.Load() != 2 || in.failed.Load() != 0 {
			t.Errorf("sent %d, failed %d", in.sent.Load(), in.failed.Load())
		}
		if err := in.send([]byte{0x45, 0}); err == nil {
			t.Error("no error for a short packet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A config whose actions inject gets raw sockets; the hooks skip the injection mark.
func TestHookSpecSkipsInjected(t *testing.T) {
	cfg := &rules.Config{Target: rules.Target{Port: 8080}, Rules: []*rules.Rule{
		{Name: "reuse", Match: rules.Match{HasFlags: segment.SYN}, ActionName: "reuse-tuple", Action: &rules.ReuseTupleAction{}}}}
	spec := HookSpec(cfg)
	if spec.SkipMark != DefaultInjectMark || spec.Scope != nfq.All {
		t.Errorf("SkipMark %#x, scope %s", spec.SkipMark, spec.Scope)
	}
	// The mark and the connmark bit of scope all do not overlap: the hooks go in.
	h, err := nfq.Install(nfq.NewFake(), nfq.NewFake(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Remove(); err != nil {
		t.Error(err)
	}
	s := &sink{ready: make(chan struct{})}
	if err := s.Inject([]byte{0x45}); err == nil {
		t.Error("a sink without raw sockets injected")
	}
}
