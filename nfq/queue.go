package nfq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Defaults for Config fields left zero.
const (
	// DefaultMaxLen lets a burst wait rather than be dropped. Measured: 10k connections
	// closing at once through the router filled a queue of 4096, and one of 16384 too
	// (with observation on, 0 to 12,407 segments dropped over 6 runs, the reader giving
	// 30k to 40k verdicts a second meanwhile); one of 65536 dropped none in 3 runs. A
	// segment that waits past its sender's retransmission timeout is sent again, which a
	// drop would cause as well; a burst shorter than the queue costs nothing.
	DefaultMaxLen = 65536
	// DefaultRcvBuf holds DefaultMaxLen small packets' messages (the kernel doubles it: a
	// full queue of 65536 would otherwise overflow the socket, counted as user_dropped).
	DefaultRcvBuf = 32 << 20
	// copyRange asks for whole packets. The kernel caps it at 0xffff minus a
	// netlink attribute header (65531 bytes); longer packets (only possible on
	// loopback, MTU 65536) arrive truncated, see Packet.OrigLen.
	copyRange = 0xffff
	// fatalReadErrors consecutive unexplained read errors stop the reader.
	fatalReadErrors = 100
)

// Config configures Open.
type Config struct {
	Num    uint16 // queue number (--queue-num)
	MaxLen uint32 // kernel queue length; 0 means DefaultMaxLen
	// NetNS is a network namespace file descriptor to bind the queue in; 0 means
	// the namespace of the calling thread. Open duplicates it: the caller may
	// close it after Open returns.
	NetNS int
	// FailOpen sets NFQA_CFG_F_FAIL_OPEN: when the kernel queue is full (or the
	// socket cannot take the packet), accept the packet instead of dropping it.
	// Without it the kernel counts each such drop (KernelQueueStats.Dropped,
	// UserDropped); with it nothing counts the packets that passed unqueued
	// (measured). Stats never sees either.
	FailOpen bool
	// RcvBuf is the netlink receive buffer in bytes; 0 means DefaultRcvBuf.
	RcvBuf int
	Logger *slog.Logger // nil means slog.Default()
	// OnWritten, when set, is called by the writer after each verdict it wrote, with the
	// packet's id, when the write returned (measurements: the packet has left).
	OnWritten func(id uint32)
}

// Packet is one queued packet.
type Packet struct {
	ID uint32
	// Time is the kernel's timestamp when it sent one, else the time the reader
	// received the packet. (Measured: the kernel sends none for TCP on these
	// paths, see doc.go.)
	Time time.Time
	// Data is the IP packet (IPv4 or IPv6 header first). It points into the
	// reader's buffer: valid only during the Handler call; copy it to keep it.
	Data []byte
	// OrigLen is the packet's length in the kernel; larger than len(Data) when
	// the copy was truncated: the kernel copies at most 65531 bytes, and
	// loopback carries TCP segments of up to 65535 (measured: 4 bytes cut).
	OrigLen int
}

// Truncated reports whether Data is shorter than the packet (see OrigLen): such
// a packet must not be given back with AcceptModified as it is.
func (p Packet) Truncated() bool { return p.OrigLen > len(p.Data) }

// Handler receives each queued packet, one at a time, on the reader goroutine.
// It must not block; the verdict (Accept, Drop, AcceptModified) may be given
// later, from any goroutine, in any order. Every packet needs exactly one verdict,
// or it stays in the kernel queue (taking one of MaxLen places) until Close.
type Handler func(Packet)

// Stats counts events of a Queue. All fields are read atomically.
type Stats struct {
	Received uint64 `json:"received"` // packets handed to the Handler
	Verdicts uint64 `json:"verdicts"` // verdicts sent
	// ENOBUFS counts receive overruns the socket reported. Open sets
	// NETLINK_NO_ENOBUFS, so the kernel does not report them (measured: 44
	// packets lost, ENOBUFS 0): losses show in KernelQueueStats.UserDropped.
	ENOBUFS uint64 `json:"enobufs"`
	// ENOENT counts verdicts for ids the kernel no longer held (given twice, or
	// after the queue flushed). The kernel answers asynchronously: such a verdict
	// returns nil and is counted in Verdicts too.
	ENOENT        uint64 `json:"enoent"`
	VerdictErrors uint64 `json:"verdict_errors"` // verdicts that could not be sent
	// Batches counts the batch verdicts written: one write accepting Batched packets in all
	// (counted in Verdicts too), a run of accepts with nothing else waiting below them.
	Batches    uint64 `json:"batches"`
	Batched    uint64 `json:"batched"`
	ReadErrors uint64 `json:"read_errors"` // other receive errors
	// DecisionLatency is the time from the reader's receipt of a packet (after the read
	// from the netlink socket, before the Handler runs) to the moment its verdict is given
	// (Accept, Drop or AcceptModified called): finproxy's own work, delays and holds
	// included.
	DecisionLatency LatencySummary `json:"decision_latency"`
	// VerdictLatency ends when the verdict is written to the socket instead: the time a
	// packet spends in finproxy, the wait for the writer included. Time spent in the
	// kernel queue before the read is in neither (the kernel gives no timestamp).
	// Verdicts given more than 8192 packets after their packet's receipt are not counted.
	VerdictLatency LatencySummary `json:"verdict_latency"`
	// VerdictDoneLatency ends when the verdict's write returned instead: the kernel
	// reinjects the packet within that write, and the softirq work that follows
	// (forwarding, the receiver's TCP, what it sends back through the hook) runs in the
	// writer's context before it returns.
	VerdictDoneLatency LatencySummary `json:"verdict_done_latency"`
}

// ErrClosed is returned by verdicts given after Close.
var ErrClosed = errors.New("nfq: queue closed")

// Queue is a bound NFQUEUE with its reader.
type Queue struct {
	cfg    Config
	log    *slog.Logger
	nf     *nfqueue.Nfqueue // the kernel's queue; nil for a FakeKernel
	fake   *FakeKernel      // the stand-in kernel of OpenFake; nil for a real queue
	h      Handler
	ctx    context.Context
	cancel context.CancelFunc
	nsfd   int // dup of cfg.NetNS, or -1

	stopMu sync.Mutex
	stop   func() bool // unregisters the AfterFunc on Open's context

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	done      chan struct{}

	fatalMu sync.Mutex
	fatal   error

	received, verdicts, enobufs, enoent, verdictErrors, readErrors atomic.Uint64
	batches, batched                                               atomic.Uint64
	pend                                                           pending // ids waiting for their verdict (pending.go)
	consecutive                                                    atomic.Uint64
	kernelTS                                                       atomic.Uint64 // packets that carried a kernel timestamp

	// Verdict latency (see latency.go): receipt times by packet id, on the monotonic
	// clock relative to base.
	base        time.Time
	ring        [ringSize]receipt
	latency     latency // receipt to verdict written
	doneLatency latency // receipt to verdict write returned
	decided     latency // receipt to verdict given

	// Verdicts go to one writer goroutine (writer.go) through vq, in the order given.
	// vmu: a send holds it shared, Close exclusively to close vq.
	vmu        sync.RWMutex
	vq         chan verdictReq
	writerDone chan struct{}
	writeWarn  atomic.Bool // a failed write was logged
}

// Open binds queue cfg.Num and starts reading it: h gets every packet until
// ctx ends or Close is called (either closes the queue).
//
// The queue is bound before Open returns; install the iptables hooks after.
// A queue number is held by one netlink socket per network namespace: if
// another process (or another Queue) holds it, Open fails with an error saying
// "queue N is in use by another process".
func Open(ctx context.Context, cfg Config, h Handler) (*Queue, error) {
	q, err := newQueue(ctx, cfg, h)
	if err != nil {
		return nil, err
	}
	if q.cfg.NetNS != 0 {
		fd, err := unix.FcntlInt(uintptr(q.cfg.NetNS), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			q.stopWriter()
			return nil, fmt.Errorf("nfq: duplicate namespace fd %d: %w", q.cfg.NetNS, err)
		}
		q.nsfd = fd
	}
	var flags uint32
	if q.cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      q.cfg.Num,
		MaxQueueLen:  q.cfg.MaxLen,            // sent as is: 0 would be a queue of length 0
		Copymode:     nfqueue.NfQnlCopyPacket, // sent as is: 0 would be COPY_NONE
		MaxPacketLen: copyRange,
		Flags:        flags,
		NetNS:        q.cfg.NetNS,
		Logger:       nfLogger{q},
	})
	if err != nil {
		q.stopWriter()
		q.closeNS()
		return nil, fmt.Errorf("nfq: open netlink socket for queue %d: %w", q.cfg.Num, err)
	}
	q.nf = nf
	fail := func(err error) (*Queue, error) {
		q.stopWriter()
		q.cancel()
		_ = nf.Close()
		q.closeNS()
		return nil, err
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		return fail(fmt.Errorf("nfq: queue %d: set NETLINK_NO_ENOBUFS: %w", q.cfg.Num, err))
	}
	q.setRcvBuf()
	if err := nf.RegisterWithErrorFunc(q.ctx, q.hook, q.onError); err != nil {
		return fail(bindError(q.cfg.Num, err))
	}
	q.start(ctx)
	return q, nil
}

// newQueue fills in the defaults of cfg and makes the Queue, not yet bound.
func newQueue(ctx context.Context, cfg Config, h Handler) (*Queue, error) {
	if h == nil {
		return nil, errors.New("nfq: Open needs a Handler")
	}
	if cfg.MaxLen == 0 {
		cfg.MaxLen = DefaultMaxLen
	}
	if cfg.RcvBuf == 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	q := &Queue{cfg: cfg, log: cfg.Logger.With("queue", cfg.Num), h: h, nsfd: -1,
		done: make(chan struct{}), base: time.Now(),
		vq: make(chan verdictReq, verdictBacklog), writerDone: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(ctx)
	go q.writer()
	return q, nil
}

// start ties the queue's life to ctx: a parent context that ends closes the queue, so
// Done and Close agree.
func (q *Queue) start(ctx context.Context) {
	q.stopMu.Lock()
	q.stop = context.AfterFunc(ctx, func() { _ = q.Close() })
	q.stopMu.Unlock()
	q.log.Debug("nfq: queue bound", "max_len", q.cfg.MaxLen, "fail_open", q.cfg.FailOpen, "netns_fd", q.cfg.NetNS)
}

// nfLogger sends go-nfqueue's own log lines to the queue's logger at debug level.
type nfLogger struct{ q *Queue }

func (l nfLogger) Debugf(format string, args ...any) { l.q.log.Debug(fmt.Sprintf(format, args...)) }
func (l nfLogger) Errorf(format string, args ...any) { l.q.log.Debug(fmt.Sprintf(format, args...)) }

// bindError explains a failed bind.
func bindError(num uint16, err error) error {
	if errors.Is(err, unix.EPERM) {
		if !hasCapNetAdmin() {
			return fmt.Errorf("nfq: bind queue %d: finproxy needs CAP_NET_ADMIN (run it as root): %w", num, err)
		}
		return fmt.Errorf("nfq: bind queue %d: queue %d is in use by another process in this network namespace "+
			"(stop it, or pick another queue number): %w", num, num, err)
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPROTONOSUPPORT) {
		return fmt.Errorf("nfq: bind queue %d: the kernel lacks NFQUEUE support (nfnetlink_queue): %w", num, err)
	}
	return fmt.Errorf("nfq: bind queue %d: %w", num, err)
}

// hasCapNetAdmin reports whether the effective capability set holds
// CAP_NET_ADMIN (true when it cannot tell).
func hasCapNetAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for line := range strings.Lines(string(b)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(hex), "%x", &caps); err != nil {
				return true
			}
			return caps&(1<<unix.CAP_NET_ADMIN) != 0
		}
	}
	return true
}

// setRcvBuf enlarges the socket's receive buffer: SO_RCVBUFFORCE (not capped
// by net.core.rmem_max; needs CAP_NET_ADMIN, which binding a queue needs too),
// else SO_RCVBUF (capped by rmem_max). Failure is logged, not fatal.
func (q *Queue) setRcvBuf() {
	want := q.cfg.RcvBuf
	var serr error
	rc, err := q.nf.Con.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, want)
		})
	}
	if err != nil || serr != nil {
		if err2 := q.nf.Con.SetReadBuffer(want); err2 != nil {
			q.log.Warn("nfq: cannot enlarge the netlink receive buffer; bursts may overflow it (see Stats.ENOBUFS and KernelStats.UserDropped)",
				"want_bytes", want, "err", errors.Join(err, serr, err2))
			return
		}
	}
	got, err := q.nf.Con.ReadBuffer()
	q.log.Debug("nfq: netlink receive buffer", "want_bytes", want, "kernel_bytes", got, "err", err)
}

// hook is go-nfqueue's callback for each packet message, on its reader goroutine.
func (q *Queue) hook(a nfqueue.Attribute) int {
	q.consecutive.Store(0)
	if a.PacketID == nil {
		q.readErrors.Add(1)
		q.log.Warn("nfq: kernel message without packet id ignored")
		return 0
	}
	p := Packet{ID: *a.PacketID, Time: time.Now()}
	if a.Payload != nil {
		p.Data = *a.Payload
	}
	p.OrigLen = len(p.Data)
	if a.CapLen != nil {
		p.OrigLen = int(*a.CapLen)
	}
	stamped := a.Timestamp != nil
	if stamped {
		p.Time = *a.Timestamp
	}
	q.deliver(p, stamped)
	return 0
}

// deliver hands one packet to the Handler.
func (q *Queue) deliver(p Packet, stamped bool) {
	q.received.Add(1)
	q.received1(p.ID, time.Now())
	q.pend.received(p.ID)
	if stamped {
		q.kernelTS.Add(1)
	}
	q.h(p)
}

// onError decides whether the reader goes on (0) or stops (1).
func (q *Queue) onError(err error) int {
	switch {
	case errors.Is(err, unix.ENOBUFS):
		// The socket overflowed; packets were lost (dropped, or accepted with FailOpen).
		if q.enobufs.Add(1) == 1 {
			q.log.Warn("nfq: netlink receive buffer overflowed: packets were lost (counted in Stats.ENOBUFS)", "err", err)
		}
		return 0
	case errors.Is(err, unix.ENOENT):
		// A verdict for an id the kernel no longer holds (given twice, or after a flush).
		q.enoent.Add(1)
		return 0
	}
	if q.ctx.Err() != nil || q.closed.Load() {
		return 1 // shutting down: the read deadline was moved into the past
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		q.setFatal(fmt.Errorf("nfq: queue %d: netlink socket closed under the reader: %w", q.cfg.Num, err))
		return 1
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return 0
	}
	q.readErrors.Add(1)
	if n := q.consecutive.Add(1); n >= fatalReadErrors {
		q.setFatal(fmt.Errorf("nfq: queue %d: reader stopped after %d consecutive receive errors: %w", q.cfg.Num, n, err))
		return 1
	}
	q.log.Warn("nfq: receive error", "err", err)
	return 0
}

func (q *Queue) setFatal(err error) {
	q.fatalMu.Lock()
	q.fatal = err
	q.fatalMu.Unlock()
	q.log.Error("nfq: reader stopped; matching packets now wait in the kernel queue until it is full", "err", err)
	go func() { _ = q.Close() }() // Close waits for the reader, which is this goroutine's caller
}

// Done is closed when the queue is closed: by Close, by the end of Open's
// context, or because the reader failed (see Err).
func (q *Queue) Done() <-chan struct{} { return q.done }

// Err returns why the reader stopped on its own, or nil.
func (q *Queue) Err() error {
	q.fatalMu.Lock()
	defer q.fatalMu.Unlock()
	return q.fatal
}

// Accept lets packet id go on. Like Drop and AcceptModified it hands the verdict to
// the writer and returns; only a closed queue makes it fail (ErrClosed). A write the
// kernel refuses is counted in Stats.VerdictErrors and logged once.
func (q *Queue) Accept(id uint32) error { return q.verdict(id, true, nil) }

// Drop drops packet id.
func (q *Queue) Drop(id uint32) error { return q.verdict(id, false, nil) }

// AcceptModified lets packet id go on with data in its place. data replaces the
// whole IP packet: lengths and IP/TCP checksums must be right, or the kernel
// drops it silently later. data must not change until the verdict is written
// (Flush).
func (q *Queue) AcceptModified(id uint32, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("nfq: accept modified packet %d: empty packet", id)
	}
	return q.verdict(id, true, data)
}

// verdict hands a verdict to the writer (writer.go).
func (q *Queue) verdict(id uint32, accept bool, data []byte) error {
	given := time.Since(q.base)
	q.vmu.RLock()
	defer q.vmu.RUnlock()
	if q.closed.Load() {
		return q.verdictError(id, accept, data, ErrClosed)
	}
	q.vq <- verdictReq{id: id, accept: accept, data: data, given: given}
	return nil
}

func (q *Queue) verdictError(id uint32, accept bool, data []byte, err error) error {
	what := "drop"
	switch {
	case accept && data != nil:
		what = "accept modified"
	case accept:
		what = "accept"
	}
	return fmt.Errorf("nfq: %s packet %d on queue %d: %w", what, id, q.cfg.Num, err)
}

// received1 remembers when packet id was received, for its verdict latency.
func (q *Queue) received1(id uint32, now time.Time) {
	r := &q.ring[id&(ringSize-1)]
	r.at.Store(max(int64(now.Sub(q.base)), 1))
	r.id.Store(id)
}

// verdictSent counts the latencies of packet id's verdict, if its receipt is remembered:
// to given (when the verdict was given), to start (when it was written) and to now (when
// the write returned), all since q.base.
func (q *Queue) verdictSent(id uint32, given, start time.Duration) {
	r := &q.ring[id&(ringSize-1)]
	if r.id.Load() != id {
		return
	}
	at := r.at.Load()
	if at == 0 || r.id.Load() != id {
		return
	}
	r.at.Store(0) // one verdict per receipt: a second one (ENOENT) is not counted
	q.decided.add(given - time.Duration(at))
	q.latency.add(start - time.Duration(at))
	q.doneLatency.add(time.Since(q.base) - time.Duration(at))
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	return Stats{
		Received:           q.received.Load(),
		Verdicts:           q.verdicts.Load(),
		ENOBUFS:            q.enobufs.Load(),
		ENOENT:             q.enoent.Load(),
		VerdictErrors:      q.verdictErrors.Load(),
		Batches:            q.batches.Load(),
		Batched:            q.batched.Load(),
		ReadErrors:         q.readErrors.Load(),
		DecisionLatency:    q.decided.summary(),
		VerdictLatency:     q.latency.summary(),
		VerdictDoneLatency: q.doneLatency.summary(),
	}
}

// KernelStats reads the kernel's counters for this queue, in its namespace.
func (q *Queue) KernelStats() (KernelQueueStats, error) {
	if q.fake != nil {
		return KernelQueueStats{Queue: q.cfg.Num, CopyMode: nfqueue.NfQnlCopyPacket, CopyRange: copyRange, IDSequence: uint32(q.received.Load())}, nil
	}
	return kernelStatsIn(q.nsfd, q.cfg.Num)
}

// Close writes the verdicts given so far, then stops the reader, unbinds the queue and
// closes the socket; verdicts given after it fail with ErrClosed. The kernel
// drops the packets still waiting for a verdict when the socket goes (measured,
// see TestCloseDropsHeld). Remove the hooks first, and give held packets their
// verdicts, to lose nothing. Close is safe to call more than once and from any
// goroutine except the Handler's (Close waits for the reader, which waits for
// the Handler to return).
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		// Verdicts given before Close are written before the socket goes.
		q.stopWriter()
		q.stopMu.Lock()
		if q.stop != nil {
			q.stop()
		}
		q.stopMu.Unlock()
		// go-nfqueue's Close can block unless the context of RegisterWithErrorFunc was
		// cancelled first. Closing the socket unbinds the queue (go-nfqueue's own unbind
		// then fails with EBADF, which is harmless and only logged at debug level).
		q.cancel()
		var err error
		if q.fake != nil {
			q.fake.close()
		} else {
			err = q.nf.Close()
		}
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
			q.closeErr = fmt.Errorf("nfq: close queue %d: %w", q.cfg.Num, err)
		}
		q.closeNS()
		close(q.done)
		q.log.Debug("nfq: queue closed", "stats", q.Stats())
	})
	return q.closeErr
}

func (q *Queue) closeNS() {
	if q.nsfd >= 0 {
		_ = unix.Close(q.nsfd)
		q.nsfd = -1
	}
}
