package runner

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/story"
)

// The pcapng format (draft-ietf-opsawg-pcapng): a Section Header Block, one Interface
// Description Block, then one Enhanced Packet Block per packet. gopacket's pcapgo.NgWriter
// (v1.1.19) writes no per-packet options, and the comment naming the rule and the verdict
// is the point of finproxy's capture, so the few blocks are written here.
const (
	pcapngSHB = 0x0A0D0D0A
	pcapngIDB = 0x00000001
	pcapngEPB = 0x00000006

	pcapngByteOrderMagic = 0x1A2B3C4D

	pcapngOptEnd     = 0
	pcapngOptComment = 1 // opt_comment, in every block
	shbUserAppl      = 4 // shb_userappl
	idbName          = 2 // if_name
	idbDescription   = 3 // if_description
	idbTsresol       = 9 // if_tsresol

	// LinkTypeRaw is LINKTYPE_RAW: each packet is an IPv4 or IPv6 packet, told apart by
	// its version nibble. NFQUEUE hands over exactly that.
	LinkTypeRaw = 101
)

// pcapngOption is one option of a block.
type pcapngOption struct {
	code  uint16
	value []byte
}

func optString(code uint16, s string) pcapngOption { return pcapngOption{code, []byte(s)} }

// optionsLen is the encoded length of opts with their opt_endofopt (0 without options).
func optionsLen(opts []pcapngOption) int {
	if len(opts) == 0 {
		return 0
	}
	n := 4
	for _, o := range opts {
		n += 4 + pad4(len(o.value))
	}
	return n
}

func pad4(n int) int { return (n + 3) &^ 3 }

// PcapngWriter writes a pcapng file of raw IP packets (LinkTypeRaw) with nanosecond
// timestamps, one optional comment per packet.
type PcapngWriter struct {
	w   io.Writer
	buf []byte
}

// NewPcapngWriter writes the section header (with comment as its opt_comment, when not
// empty) and one interface named ifName, and returns the writer of the packets.
func NewPcapngWriter(w io.Writer, comment, ifName, ifDescr string) (*PcapngWriter, error) {
	pw := &PcapngWriter{w: w}
	shb := []pcapngOption{optString(shbUserAppl, "finproxy")}
	if comment != "" {
		shb = append(shb, optString(pcapngOptComment, comment))
	}
	body := make([]byte, 16)
	binary.LittleEndian.PutUint32(body[0:], pcapngByteOrderMagic)
	binary.LittleEndian.PutUint16(body[4:], 1) // major version
	binary.LittleEndian.PutUint16(body[6:], 0) // minor version
	binary.LittleEndian.PutUint64(body[8:], ^uint64(0))
	if err := pw.block(pcapngSHB, body, nil, shb); err != nil {
		return nil, err
	}
	idb := []pcapngOption{optString(idbName, ifName), {idbTsresol, []byte{9}}}
	if ifDescr != "" {
		idb = append(idb, optString(idbDescription, ifDescr))
	}
	body = make([]byte, 8)
	binary.LittleEndian.PutUint16(body[0:], LinkTypeRaw)
	binary.LittleEndian.PutUint32(body[4:], 0) // snaplen: no limit
	if err := pw.block(pcapngIDB, body, nil, idb); err != nil {
		return nil, err
	}
	return pw, nil
}

// WritePacket writes one Enhanced Packet Block on interface 0.
func (pw *PcapngWriter) WritePacket(ts time.Time, data []byte, comment string) error {
	var opts []pcapngOption
	if comment != "" {
		opts = []pcapngOption{optString(pcapngOptComment, comment)}
	}
	ns := uint64(ts.UnixNano())
	body := make([]byte, 20)
	binary.LittleEndian.PutUint32(body[0:], 0) // interface id
	binary.LittleEndian.PutUint32(body[4:], uint32(ns>>32))
	binary.LittleEndian.PutUint32(body[8:], uint32(ns))
	binary.LittleEndian.PutUint32(body[12:], uint32(len(data)))
	binary.LittleEndian.PutUint32(body[16:], uint32(len(data)))
	return pw.block(pcapngEPB, body, data, opts)
}

// block writes type, length, the fixed body, data padded to 32 bits, the options and the
// trailing length, in one Write.
func (pw *PcapngWriter) block(typ uint32, body, data []byte, opts []pcapngOption) error {
	total := 12 + len(body) + pad4(len(data)) + optionsLen(opts)
	b := pw.buf[:0]
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(total))
	b = append(b, body...)
	b = append(b, data...)
	b = append(b, make([]byte, pad4(len(data))-len(data))...)
	if len(opts) > 0 {
		for _, o := range opts {
			b = binary.LittleEndian.AppendUint16(b, o.code)
			b = binary.LittleEndian.AppendUint16(b, uint16(len(o.value)))
			b = append(b, o.value...)
			b = append(b, make([]byte, pad4(len(o.value))-len(o.value))...)
		}
		b = binary.LittleEndian.AppendUint32(b, pcapngOptEnd) // opt_endofopt, length 0
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(total))
	pw.buf = b
	_, err := pw.w.Write(b)
	return err
}

// PacketComment says what finproxy did to a segment, for the capture: "dropped by
// drop-final-ack", "held 240ms by hold-client-fin, then accepted", "held 1.2ms by
// merge-ack, then merged into the FIN (dropped)", "accepted (no rule)", "injected by
// rst-in-close-wait"; for a segment a rule rewrote, "rewritten by R, accepted (as it
// arrived)" and, for the packet as it left, "(as it left)".
func PacketComment(r rules.Record, left bool) string {
	if r.Injected {
		return "finproxy: injected by " + orNone(r.Rule)
	}
	held := time.Duration(r.HeldNS)
	var b strings.Builder
	b.WriteString("finproxy: ")
	fate := "accepted"
	if r.Verdict == rules.Drop {
		fate = "dropped"
	}
	switch {
	case r.Rule == "":
		b.WriteString(fate + " (no rule)")
	case r.Action == "merge" && r.Verdict == rules.Drop:
		fmt.Fprintf(&b, "held %v by %s, then merged into the FIN (dropped)", story.RoundDuration(held), r.Rule)
	case r.Action == "hold" || r.Action == "merge" || r.Action == "delay":
		verb := "held"
		if r.Action == "delay" {
			verb = "delayed"
		}
		fmt.Fprintf(&b, "%s %v by %s, then %s", verb, story.RoundDuration(held), r.Rule, fate)
	case r.Modified:
		fmt.Fprintf(&b, "rewritten by %s, %s", r.Rule, fate)
	default:
		fmt.Fprintf(&b, "%s by %s", fate, r.Rule)
	}
	switch {
	case r.Modified && left:
		b.WriteString(" (as it left)")
	case r.Modified:
		b.WriteString(" (as it arrived)")
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(no rule)"
	}
	return s
}

// pcapCapture writes the capture of `finproxy run --pcap`: every queued segment as it
// arrived (its queue time), and where an action changed it or made it, as it left (its
// verdict time), each with a comment naming the rule and the verdict. The handler keeps a
// copy of each queued packet by its id (capture); the packet is written when the event log
// record for that id arrives (record). Packets are written in timestamp order: a block
// waits until no packet still awaiting its verdict was queued before it.
type pcapCapture struct {
	mu      sync.Mutex
	f       *os.File
	bw      *bufio.Writer
	pw      *PcapngWriter
	cnt     *wholeCounter // counts the packet blocks in the file
	pending map[uint32]capturedPacket
	ready   blockHeap
	seq     uint64
	written uint64 // packet blocks given to the writer (cnt.whole of them are in the file)
	missing uint64 // records with no captured packet (nothing to write)
	flushed time.Time
	err     error
	closed  bool
	log     *slog.Logger
	path    string

	stop, done chan struct{} // the periodic flush
}

type capturedPacket struct {
	at   time.Time
	data []byte
}

type pendingBlock struct {
	ts      int64
	seq     uint64
	data    []byte
	comment string
}

type blockHeap []pendingBlock

func (h blockHeap) Len() int { return len(h) }
func (h blockHeap) Less(i, j int) bool {
	if h[i].ts != h[j].ts {
		return h[i].ts < h[j].ts
	}
	return h[i].seq < h[j].seq
}
func (h blockHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *blockHeap) Push(x any)   { *h = append(*h, x.(pendingBlock)) }
func (h *blockHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func openPcap(path, comment, ifName string, log *slog.Logger) (*pcapCapture, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	cnt := &wholeCounter{w: f}
	bw := bufio.NewWriterSize(cnt, 64<<10)
	// The headers are not packets: only the blocks written after them count.
	pw, err := NewPcapngWriter(&unitWriter{buf: bw, c: cnt}, comment, ifName, "segments queued to finproxy (NFQUEUE), as they arrived and, when changed or made by finproxy, as they left")
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap %s: %w", path, err)
	}
	pw.w = &unitWriter{buf: bw, c: cnt, unit: true}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &pcapCapture{f: f, bw: bw, pw: pw, cnt: cnt, pending: map[uint32]capturedPacket{}, flushed: time.Now(),
		log: log, path: path, stop: make(chan struct{}), done: make(chan struct{})}
	// What is buffered reaches the file within about a second even when no record comes:
	// a reader following the file sees it, and a full disk is found (and reported) then.
	go func() {
		defer close(c.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case now := <-t.C:
				c.mu.Lock()
				if c.err == nil && !c.closed && c.bw.Buffered() > 0 && now.Sub(c.flushed) >= 500*time.Millisecond {
					c.fail(c.bw.Flush())
					c.flushed = now
				}
				c.mu.Unlock()
			}
		}
	}()
	return c, nil
}

// fail records the first write error and reports it at once; c.mu is held.
func (c *pcapCapture) fail(err error) {
	if err == nil || c.err != nil {
		return
	}
	c.err = err
	outputFailure(c.log, "pcap", c.path, err, c.cnt.whole)
}

// capture keeps a copy of a queued packet until its record arrives. It must be called
// before the engine sees the packet: the record may come before Handle returns.
func (c *pcapCapture) capture(id uint32, at time.Time, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.pending[id] = capturedPacket{at: at, data: append([]byte(nil), data...)}
}

// record writes the packet(s) of an event log record.
func (c *pcapCapture) record(r rules.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	comment := PacketComment(r, false)
	if !r.Injected {
		p, ok := c.pending[r.ID]
		if ok {
			delete(c.pending, r.ID)
			c.push(p.at.UnixNano(), p.data, comment)
		} else {
			c.missing++
		}
	}
	if (r.Modified || r.Injected) && len(r.Out) > 0 {
		c.push(r.VerdictTime, append([]byte(nil), r.Out...), PacketComment(r, true))
	}
	c.drain(false)
}

func (c *pcapCapture) push(ts int64, data []byte, comment string) {
	c.seq++
	heap.Push(&c.ready, pendingBlock{ts: ts, seq: c.seq, data: data, comment: comment})
}

// drain writes the blocks no pending packet precedes (all of them with all).
func (c *pcapCapture) drain(all bool) {
	limit := int64(1<<63 - 1)
	if !all {
		for _, p := range c.pending {
			limit = min(limit, p.at.UnixNano())
		}
	}
	for c.ready.Len() > 0 && c.ready[0].ts <= limit {
		b := heap.Pop(&c.ready).(pendingBlock)
		if c.err == nil {
			c.fail(c.pw.WritePacket(time.Unix(0, b.ts), b.data, b.comment))
		}
		c.written++
	}
	// A reader following the file sees packets within about a second, without a write
	// per packet.
	if now := time.Now(); c.err == nil && now.Sub(c.flushed) > time.Second {
		c.fail(c.bw.Flush())
		c.flushed = now
	}
}

// close writes what is left: packets whose record never came are written with a comment
// saying so. It returns the packets in the file (whole) and those that are not.
func (c *pcapCapture) close() (written, lost, missing uint64, err error) {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, p := range c.pending {
		c.push(p.at.UnixNano(), p.data, "finproxy: no verdict recorded")
	}
	c.pending = nil
	c.drain(true)
	if c.err == nil {
		c.fail(c.bw.Flush())
	}
	err = errors.Join(c.err, c.f.Close())
	written, lost = c.cnt.whole, c.written-c.cnt.whole
	if err != nil {
		err = fmt.Errorf("pcap %s: %d of %d packets written: %w", c.path, written, c.written, err)
	}
	return written, lost, c.missing, err
}

// pcapComment is the capture's section comment: what ran.
func pcapComment(cfg *rules.Config, spec nfq.HookSpec) string {
	return fmt.Sprintf("finproxy run -c %s: queue %d, %s hook, port %d, started %s",
		cfg.Name, spec.Queue, spec.Mode, spec.Port, time.Now().UTC().Format(time.RFC3339))
}
