package e2e

// Segments that must not bypass the rules (issue 15, item 6): a FIN in IPv4 or IPv6
// fragments, behind IPv6 extension headers, or with malformed TCP options, crafted in the
// client namespace and sent through a real hook whose only rule drops every FIN. A raw
// TCP socket in the receiving namespace sees what its stack was handed (after its own
// reassembly): the FIN must never be among it. Beside each FIN goes a control probe of the
// same shape without FIN (not queued, no rule acts on it), which must arrive: it proves
// that the shape reaches the receiver at all, so that a FIN missing there was dropped by
// finproxy and not by some kernel's sanity check.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/lab"
	"golang.org/x/sys/unix"
)

const dropFINConfig = `
name = "drop-every-fin"
[target]
port = 8080
[[rule]]
name = "drop-fin"
has_flags = "FIN"
action = "drop"
`

// crafted TCP header fields and packets.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpACK = 0x10
)

// csum is the Internet checksum of the pseudo-header and TCP bytes of one segment.
func csum(src, dst netip.Addr, tcp []byte) uint16 {
	var acc uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			acc += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			acc += uint32(b[0]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	acc += 6 + uint32(len(tcp))
	add(tcp)
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// tcpSegment builds a TCP header with the raw option bytes opts (a multiple of 4 long),
// then payload, with its checksum.
func tcpSegment(src, dst netip.AddrPort, flags byte, opts, payload []byte) []byte {
	if len(opts)%4 != 0 {
		panic("options must be padded to 4 bytes")
	}
	b := make([]byte, 20, 20+len(opts)+len(payload))
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12] = byte((20+len(opts))/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 502)
	b = append(append(b, opts...), payload...)
	binary.BigEndian.PutUint16(b[16:], csum(src.Addr(), dst.Addr(), b))
	return b
}

// ipv4Packets carries tcp in IPv4, cut into fragments at the given offsets (multiples of
// 8; none: one whole packet).
func ipv4Packets(src, dst netip.Addr, id uint16, tcp []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(tcp))
	for i := 0; i+1 < len(bounds); i++ {
		part := tcp[bounds[i]:bounds[i+1]]
		h := make([]byte, 20, 20+len(part))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(part)))
		binary.BigEndian.PutUint16(h[4:], id)
		ff := uint16(bounds[i] / 8)
		if i+2 < len(bounds) {
			ff |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(h[6:], ff)
		h[8], h[9] = 64, 6
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		out = append(out, append(h, part...)) // the raw socket fills in the checksum
	}
	return out
}

// IPv6 next-header values.
const (
	nhHopByHop = 0
	nhTCP      = 6
	nhFragment = 44
	nhDestOpts = 60
)

// ipv6Packet wraps payload, whose first header is next, in an IPv6 header.
func ipv6Packet(src, dst netip.Addr, next byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, payload...)
}

// optionsHeader is an 8-byte Hop-by-Hop or Destination Options header holding one PadN.
func optionsHeader(next byte) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }

// ipv6Fragments carries tcp in IPv6 fragments cut at the given offsets (multiples of 8).
func ipv6Fragments(src, dst netip.Addr, id uint32, tcp []byte, cuts ...int) [][]byte {
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(tcp))
	for i := 0; i+1 < len(bounds); i++ {
		fh := make([]byte, 8)
		fh[0] = nhTCP
		off := uint16(bounds[i]/8) << 3
		if i+2 < len(bounds) {
			off |= 1 // more fragments
		}
		binary.BigEndian.PutUint16(fh[2:], off)
		binary.BigEndian.PutUint32(fh[4:], id)
		out = append(out, ipv6Packet(src, dst, nhFragment, append(fh, tcp[bounds[i]:bounds[i+1]]...)))
	}
	return out
}

// bypassCase is one shape of packet: build returns the packets carrying a segment with
// the given flags from src to dst.
type bypassCase struct {
	name  string
	v6    bool
	build func(src, dst netip.AddrPort, flags byte) [][]byte
}

// lostLocally names the shapes the receiver's kernel drops whatever their flags when it
// reassembles them itself in the hooked namespace (local mode), and why: their control
// probe is then not required to arrive (the FIN still must not).
var lostLocally = map[string]string{
	"ipv6 hop-by-hop, destination options, fragments": "measured on Linux 6.18: with conntrack's reassembly on in the " +
		"receiving namespace, a datagram with Destination Options before its fragment header never reaches the stack",
}

var payload40 = bytes.Repeat([]byte("finproxy"), 5)

func bypassCases() []bypassCase {
	id := uint16(0x4000)
	nextID := func() uint16 { id++; return id }
	v4opts := func(opts []byte) func(src, dst netip.AddrPort, flags byte) [][]byte {
		return func(src, dst netip.AddrPort, flags byte) [][]byte {
			return ipv4Packets(src.Addr(), dst.Addr(), nextID(), tcpSegment(src, dst, flags, opts, payload40))
		}
	}
	cases := []bypassCase{
		{"ipv4 tiny first fragment", false, func(src, dst netip.AddrPort, flags byte) [][]byte {
			// 8 bytes of TCP header in the first fragment: ports and seq, not the flags.
			return ipv4Packets(src.Addr(), dst.Addr(), nextID(), tcpSegment(src, dst, flags, nil, payload40), 8)
		}},
		{"ipv4 fragments", false, func(src, dst netip.AddrPort, flags byte) [][]byte {
			return ipv4Packets(src.Addr(), dst.Addr(), nextID(), tcpSegment(src, dst, flags, nil, payload40), 24)
		}},
		{"ipv6 fragments", true, func(src, dst netip.AddrPort, flags byte) [][]byte {
			return ipv6Fragments(src.Addr(), dst.Addr(), uint32(nextID()), tcpSegment(src, dst, flags, nil, payload40), 24)
		}},
		{"ipv6 hop-by-hop", true, func(src, dst netip.AddrPort, flags byte) [][]byte {
			tcp := tcpSegment(src, dst, flags, nil, payload40)
			return [][]byte{ipv6Packet(src.Addr(), dst.Addr(), nhHopByHop, append(optionsHeader(nhTCP), tcp...))}
		}},
		{"ipv6 destination options", true, func(src, dst netip.AddrPort, flags byte) [][]byte {
			tcp := tcpSegment(src, dst, flags, nil, payload40)
			return [][]byte{ipv6Packet(src.Addr(), dst.Addr(), nhDestOpts, append(optionsHeader(nhTCP), tcp...))}
		}},
		{"ipv6 hop-by-hop, destination options, fragments", true, func(src, dst netip.AddrPort, flags byte) [][]byte {
			frags := ipv6Fragments(src.Addr(), dst.Addr(), uint32(nextID()), tcpSegment(src, dst, flags, nil, payload40), 24)
			for i, f := range frags {
				ext := slicesConcat(optionsHeader(nhDestOpts), optionsHeader(nhFragment))
				frags[i] = ipv6Packet(src.Addr(), dst.Addr(), nhHopByHop, append(ext, f[40:]...))
			}
			return frags
		}},
		// Linux stops reading options at one whose length is below 2 or beyond the
		// header, and goes on with the segment: its FIN counts.
		{"tcp option length 0", false, v4opts([]byte{8, 0, 0, 0})},
		{"tcp option length 1", false, v4opts([]byte{1, 1, 3, 1})},
		{"tcp over-long sack", false, v4opts([]byte{1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2})},
		{"ipv6 tcp option length 0", true, func(src, dst netip.AddrPort, flags byte) [][]byte {
			return [][]byte{ipv6Packet(src.Addr(), dst.Addr(), nhTCP, tcpSegment(src, dst, flags, []byte{2, 0, 5, 180}, payload40))}
		}},
	}
	return cases
}

func slicesConcat(a, b []byte) []byte { return append(append([]byte(nil), a...), b...) }

// tcpSniffer receives, in one namespace, every TCP segment its stack delivers (raw
// IPPROTO_TCP sockets get a copy after reassembly and extension headers, before TCP
// itself looks at the segment), and records the flags seen per source port.
type tcpSniffer struct {
	mu     sync.Mutex
	seen   map[uint16]byte // source port -> flags (ORed)
	fds    []int
	closed atomic.Bool
	done   sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

func newTCPSniffer(t *testing.T, do func(func() error) error) *tcpSniffer {
	t.Helper()
	s := &tcpSniffer{seen: map[uint16]byte{}}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		var fd int
		err := do(func() (err error) {
			fd, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
			return err
		})
		if err != nil {
			t.Fatalf("raw TCP socket: %v", err)
		}
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		s.fds = append(s.fds, fd)
		s.done.Add(1)
		go s.read(fd, fam == unix.AF_INET)
	}
	t.Cleanup(s.close)
	return s
}

func (s *tcpSniffer) read(fd int, v4 bool) {
	defer s.done.Done()
	buf := make([]byte, 65536)
	for !s.closed.Load() { // a receive times out every 100 ms to look
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if !errors.Is(err, unix.EBADF) {
				s.errMu.Lock()
				s.err = err
				s.errMu.Unlock()
			}
			return
		}
		b := buf[:n]
		if v4 { // an IPv4 raw socket gets the IP header, an IPv6 one only the TCP segment
			if len(b) < 20 {
				continue
			}
			b = b[int(b[0]&0x0f)*4:]
		}
		if len(b) < 14 {
			continue
		}
		s.mu.Lock()
		s.seen[binary.BigEndian.Uint16(b)] |= b[13]
		s.mu.Unlock()
	}
}

func (s *tcpSniffer) flags(port uint16) (byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.seen[port]
	return f, ok
}

func (s *tcpSniffer) close() {
	s.closed.Store(true)
	s.done.Wait()
	for _, fd := range s.fds {
		_ = unix.Close(fd)
	}
	s.fds = nil
}

// rawSender sends whole IP packets from one namespace (IPPROTO_RAW: the header is ours).
type rawSender struct{ fd4, fd6 int }

func newRawSender(t *testing.T, do func(func() error) error) *rawSender {
	t.Helper()
	r := &rawSender{}
	err := do(func() (err error) {
		if r.fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		r.fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(r.fd4); unix.Close(r.fd6) })
	return r
}

func (r *rawSender) send(t *testing.T, pkts [][]byte) {
	t.Helper()
	for _, p := range pkts {
		var err error
		if p[0]>>4 == 4 {
			dst, _ := netip.AddrFromSlice(p[16:20])
			err = unix.Sendto(r.fd4, p, 0, &unix.SockaddrInet4{Addr: dst.As4()})
		} else {
			dst, _ := netip.AddrFromSlice(p[24:40])
			err = unix.Sendto(r.fd6, p, 0, &unix.SockaddrInet6{Addr: dst.As16()})
		}
		if err != nil {
			t.Fatalf("send crafted packet %x: %v", p, err)
		}
	}
}

// startRunIn starts `finproxy run` in role's namespace with the hook mode given and waits
// until it is ready; stop ends it with SIGTERM and returns its summary and report.
func startRunIn(t *testing.T, topo *lab.Topology, role, hook, config string) (stop func() (string, runner.Report)) {
	t.Helper()
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	cmd := topo.Command(context.Background(), role, finproxyBin, "run", "-c", config, "--hook", hook,
		"--no-observe", "--report", report)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(stderr.String(), "finproxy: ready") {
		select {
		case err := <-exited:
			t.Fatalf("finproxy run exited before it was ready (%v):\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("finproxy run: not ready after 15s:\n%s", stderr.String())
		}
	}
	return func() (string, runner.Report) {
		t.Helper()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("finproxy run after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("finproxy run still running 10s after SIGTERM")
		}
		var rep runner.Report
		data, err := os.ReadFile(report)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &rep); err != nil {
			t.Fatalf("report: %v", err)
		}
		return stdout.String(), rep
	}
}

// checkNoBypass sends every case's control probe and FIN probe from the client to the
// server and checks what reached recv (the sniffer of the receiving namespace).
func checkNoBypass(t *testing.T, topo *lab.Topology, recv *tcpSniffer, local bool, cases []bypassCase) (fins int) {
	t.Helper()
	send := newRawSender(t, func(f func() error) error { return topo.Do(lab.RoleClient, f) })
	port := uint16(41000)
	for _, c := range cases {
		src, dst := netip.AddrPortFrom(topo.ClientAddr, 0), netip.AddrPortFrom(topo.ServerAddr, 8080)
		if c.v6 {
			src, dst = netip.AddrPortFrom(topo.ClientAddr6, 0), netip.AddrPortFrom(topo.ServerAddr6, 8080)
		}
		ctlPort, finPort := port, port+1
		port += 2
		send.send(t, c.build(netip.AddrPortFrom(src.Addr(), ctlPort), dst, tcpACK|tcpPSH))
		send.send(t, c.build(netip.AddrPortFrom(src.Addr(), finPort), dst, tcpFIN|tcpACK))
		fins++
		deadline := time.Now().Add(3 * time.Second)
		for {
			if _, ok := recv.flags(ctlPort); ok {
				break
			}
			if why := lostLocally[c.name]; time.Now().After(deadline) && local && why != "" {
				t.Logf("%s: the control probe did not arrive either (%s)", c.name, why)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: the control probe (same shape, no FIN) never reached the server: the case proves nothing", c.name)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // the FIN was sent after the control probe
		if f, ok := recv.flags(finPort); ok {
			t.Errorf("%s: a FIN (flags %#x) reached the server through a rule that drops every FIN", c.name, f)
		}
	}
	return fins
}

func checkReport(t *testing.T, summary string, rep runner.Report, fins int) {
	t.Helper()
	t.Logf("finproxy summary:\n%s", summary)
	var dropped uint64
	for _, c := range rep.Counters {
		if c.Rule == "drop-fin" {
			dropped = c.Dropped
		}
	}
	if dropped != uint64(fins) {
		t.Errorf("drop-fin dropped %d segments, want %d (one per FIN probe)", dropped, fins)
	}
	if rep.Undecodable != 0 {
		t.Errorf("%d queued packets could not be classified, want 0 (every probe reassembled and decoded)", rep.Undecodable)
	}
}

// TestNoBypassForward: finproxy on the router's FORWARD path.
func TestNoBypassForward(t *testing.T) {
	topo := newLab(t)
	recv := newTCPSniffer(t, func(f func() error) error { return topo.Do(lab.RoleServer, f) })
	stop := startRunIn(t, topo, lab.RoleRouter, "forward", writeConfig(t, "drop-fin", dropFINConfig))
	fins := checkNoBypass(t, topo, recv, false, bypassCases())
	summary, rep := stop()
	checkReport(t, summary, rep, fins)
	iptablesClean(t, topo, lab.RoleRouter)
}

// TestNoBypassLocal: finproxy in the server's namespace, on its INPUT path.
func TestNoBypassLocal(t *testing.T) {
	topo := newLab(t)
	recv := newTCPSniffer(t, func(f func() error) error { return topo.Do(lab.RoleServer, f) })
	stop := startRunIn(t, topo, lab.RoleServer, "local", writeConfig(t, "drop-fin", dropFINConfig))
	fins := checkNoBypass(t, topo, recv, true, bypassCases())
	summary, rep := stop()
	checkReport(t, summary, rep, fins)
	iptablesClean(t, topo, lab.RoleServer)
}
