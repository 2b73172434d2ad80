package runner

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultInjectMark is the fwmark (SO_MARK) carried by the segments finproxy sends itself
// (injected by an action, through a raw socket). HookSpec gives it as the hooks'
// SkipMark: finproxy's chain returns such packets at its top, so that an injected segment
// is never queued again (in local mode, where the raw socket's packets pass the hooked
// OUTPUT chain; in forward mode they leave through OUTPUT, which is not hooked). It is a
// bit of its own, apart from the bits of nfq.DefaultConnMark (0x00f10000).
const DefaultInjectMark uint32 = 0x00020000

// injector sends whole IP packets through raw sockets (IPPROTO_RAW: the header is
// ours; the kernel fills in the IPv4 header checksum, total length and, when 0, the
// identification, and routes the packet by its destination). It is safe for concurrent
// use.
type injector struct {
	fd4, fd6 int
	sent     atomic.Uint64
	failed   atomic.Uint64
}

// openInjector opens the raw sockets of the families wanted, marked with mark, in the
// network namespace of the calling thread.
func openInjector(mark uint32, v4, v6 bool) (*injector, error) {
	in := &injector{fd4: -1, fd6: -1}
	open := func(family int) (int, error) {
		fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return -1, err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_MARK: %w", err)
		}
		return fd, nil
	}
	var err error
	if v4 {
		if in.fd4, err = open(unix.AF_INET); err != nil {
			return nil, fmt.Errorf("open a raw IPv4 socket for injection: %w", err)
		}
	}
	if v6 {
		if in.fd6, err = open(unix.AF_INET6); err != nil {
			in.close()
			return nil, fmt.Errorf("open a raw IPv6 socket for injection: %w", err)
		}
	}
	return in, nil
}

// send sends the IP packet b toward its destination address.
func (in *injector) send(b []byte) error {
	err := in.sendTo(b)
	if err != nil {
		in.failed.Add(1)
		return err
	}
	in.sent.Add(1)
	return nil
}

func (in *injector) sendTo(b []byte) error {
	if len(b) == 0 {
		return errors.New("inject: empty packet")
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return errors.New("inject: short IPv4 packet")
		}
		if in.fd4 < 0 {
			return errors.New("inject: no IPv4 raw socket (the target is IPv6 only)")
		}
		dst, _ := netip.AddrFromSlice(b[16:20])
		return unix.Sendto(in.fd4, b, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	case 6:
		if len(b) < 40 {
			return errors.New("inject: short IPv6 packet")
		}
		if in.fd6 < 0 {
			return errors.New("inject: no IPv6 raw socket (the target is IPv4 only)")
		}
		dst, _ := netip.AddrFromSlice(b[24:40])
		return unix.Sendto(in.fd6, b, 0, &unix.SockaddrInet6{Addr: dst.As16()})
	}
	return fmt.Errorf("inject: IP version %d", b[0]>>4)
}

func (in *injector) close() {
	for _, fd := range []*int{&in.fd4, &in.fd6} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}
