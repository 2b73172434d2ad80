package nfq

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// transport carries netlink datagrams between a Queue and the kernel (or a FakeKernel).
type transport interface {
	// read blocks until a datagram arrives, copies it into buf and returns its length.
	// After close it returns an error.
	read(buf []byte) (int, error)
	// write sends one message. It may be called from any goroutine.
	write(msg []byte) error
	close() error
}

// sockTransport is the netlink socket. The hot path bypasses the netlink library: reads go
// through the runtime's poller on the socket's RawConn with one reusable closure, writes
// are one write(2) (a netlink message to the kernel is processed within the call: it
// never blocks). Neither allocates.
type sockTransport struct {
	nl *netlink.Conn
	rc syscall.RawConn

	mu sync.RWMutex // write holds it for reading, close for writing
	fd int          // -1 once closed

	// Reader state: used by the one reader goroutine only.
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool
}

func newSockTransport(nl *netlink.Conn) (*sockTransport, error) {
	rc, err := nl.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &sockTransport{nl: nl, rc: rc, fd: -1}
	if err := rc.Control(func(fd uintptr) { t.fd = int(fd) }); err != nil {
		return nil, err
	}
	t.readFn = func(fd uintptr) bool {
		n, err := unix.Read(int(fd), t.rbuf)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false // wait for the poller
		}
		t.rn, t.rerr = n, err
		return true
	}
	return t, nil
}

func (t *sockTransport) read(buf []byte) (int, error) {
	t.rbuf = buf
	if err := t.rc.Read(t.readFn); err != nil {
		return 0, err
	}
	if t.rerr != nil {
		return 0, t.rerr
	}
	return t.rn, nil
}

func (t *sockTransport) write(msg []byte) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.fd < 0 {
		return net.ErrClosed
	}
	for {
		_, err := unix.Write(t.fd, msg)
		if err != unix.EINTR {
			return err
		}
	}
}

func (t *sockTransport) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil
	}
	t.fd = -1
	return t.nl.Close()
}

// execute sends a configuration message and waits for the kernel's acknowledgment. Only
// before the reader starts: the reply is read from the same socket.
func (t *sockTransport) execute(data []byte) error {
	_, err := t.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(msgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   data,
	})
	return err
}

// FakeKernel stands in for the kernel behind a Queue opened with OpenFake, for tests and
// benchmarks of whatever sits on a queue (here and in other packages): Deliver hands the
// reader a packet message exactly as the kernel encodes it, and the verdicts the Queue
// sends come back decoded. Nothing allocates per packet.
type FakeKernel struct {
	num  uint16
	in   chan []byte
	ack  chan struct{}
	done chan struct{}
	once sync.Once
	buf  []byte // Deliver's encoding buffer (one Deliver at a time)
	dmu  sync.Mutex

	mu sync.Mutex
	fv FakeVerdicts
	// OnVerdict, when set before the first Deliver, sees every verdict: the packet id,
	// accept or drop, and the replacement packet (nil if none; valid during the call only).
	OnVerdict func(id uint32, accept bool, data []byte)
}

// FakeVerdicts counts the verdicts a FakeKernel received.
type FakeVerdicts struct {
	Accepted, Dropped, Modified uint64
	LastID                      uint32
	LastAccept                  bool
}

// OpenFake opens a Queue whose kernel is a FakeKernel: the same reader, message decoding,
// Handler calls and verdict encoding as Open, without a socket.
func OpenFake(ctx context.Context, cfg Config, h Handler) (*Queue, *FakeKernel, error) {
	k := &FakeKernel{num: cfg.Num, in: make(chan []byte), ack: make(chan struct{}), done: make(chan struct{}),
		buf: make([]byte, 0, 1<<16+256)}
	q, err := open(ctx, cfg, h, &fakeTransport{k: k})
	if err != nil {
		return nil, nil, err
	}
	return q, k, nil
}

// Deliver queues packet id with data (an IP packet) and returns once the Queue's Handler
// has returned for it (its verdict may come later). It returns false if the Queue is closed.
func (k *FakeKernel) Deliver(id uint32, data []byte) bool {
	k.dmu.Lock()
	defer k.dmu.Unlock()
	b := k.buf[:0]
	n := nlmsgHdrLen + nfgenLen + nlaHdrLen + 8 + nlaHdrLen + align4(len(data))
	if cap(b) < n {
		k.buf = make([]byte, 0, n)
		b = k.buf
	}
	b = b[:n]
	putNlmsg(b, n, msgPacket, 0)
	putNfgen(b[nlmsgHdrLen:], k.num)
	off := putAttr(b, nlmsgHdrLen+nfgenLen, attrPacketHdr, 7)
	clear(b[off-8 : off])
	binary.BigEndian.PutUint32(b[off-8:], id)
	start := off + nlaHdrLen
	end := putAttr(b, off, attrPayload, len(data))
	copy(b[start:], data)
	clear(b[start+len(data) : end])
	select {
	case k.in <- b:
	case <-k.done:
		return false
	}
	select {
	case <-k.ack:
		return true
	case <-k.done:
		return false
	}
}

// Verdicts returns the counts of verdicts received so far.
func (k *FakeKernel) Verdicts() FakeVerdicts {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fv
}

func (k *FakeKernel) verdict(msg []byte) error {
	typ, body, _, err := nextMsg(msg)
	if err != nil || typ != msgVerdict || len(body) < nfgenLen+nlaHdrLen+8 {
		return fmt.Errorf("fake kernel: bad verdict message (type %#x): %v", typ, err)
	}
	a := body[nfgenLen:]
	v, id := binary.BigEndian.Uint32(a[nlaHdrLen:]), binary.BigEndian.Uint32(a[nlaHdrLen+4:])
	var data []byte
	if rest := a[nlaHdrLen+8:]; len(rest) >= nlaHdrLen {
		l := int(binary.NativeEndian.Uint16(rest))
		if l >= nlaHdrLen && l <= len(rest) {
			data = rest[nlaHdrLen:l]
		}
	}
	k.mu.Lock()
	switch {
	case v == verdictAccept && data != nil:
		k.fv.Modified++
		k.fv.Accepted++
	case v == verdictAccept:
		k.fv.Accepted++
	default:
		k.fv.Dropped++
	}
	k.fv.LastID, k.fv.LastAccept = id, v == verdictAccept
	k.mu.Unlock()
	if k.OnVerdict != nil {
		k.OnVerdict(id, v == verdictAccept, data)
	}
	return nil
}

type fakeTransport struct {
	k       *FakeKernel
	pending bool // the reader holds a delivered datagram not yet acknowledged
}

func (t *fakeTransport) read(buf []byte) (int, error) {
	k := t.k
	if t.pending {
		t.pending = false
		select {
		case k.ack <- struct{}{}:
		case <-k.done:
			return 0, net.ErrClosed
		}
	}
	select {
	case d := <-k.in:
		t.pending = true
		return copy(buf, d), nil
	case <-k.done:
		return 0, net.ErrClosed
	}
}

func (t *fakeTransport) write(msg []byte) error {
	select {
	case <-t.k.done:
		return net.ErrClosed
	default:
	}
	return t.k.verdict(msg)
}

func (t *fakeTransport) close() error {
	t.k.once.Do(func() { close(t.k.done) })
	return nil
}
