package observe

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Socket is a TCP socket as sock_diag (netlink inet_diag, what ss uses) reports it.
type Socket struct {
	Family string         `json:"family"` // AF_INET or AF_INET6
	Local  netip.AddrPort `json:"local"`  // IPv4-mapped addresses are unmapped
	Remote netip.AddrPort `json:"remote"`
	// State is the socket's state; for a timewait socket its substate (TIME_WAIT, or
	// FIN_WAIT2 for an orphan that reached FIN_WAIT2); for a request socket (a handshake
	// in progress on a listener) SYN_RECV.
	State   State         `json:"state"`
	Timer   TimerKind     `json:"timer"`
	Expires time.Duration `json:"expires_ns"` // until the timer fires (millisecond resolution)
	Retrans uint8         `json:"retrans"`    // retransmissions (or probes) of the pending timer
	RecvQ   uint32        `json:"recv_q"`     // unread bytes; accept backlog for a listener
	SendQ   uint32        `json:"send_q"`     // unacknowledged bytes; backlog limit for a listener
	UID     uint32        `json:"uid"`
	Inode   uint32        `json:"inode"` // 0 for timewait, request and orphaned sockets
	Cookie  uint64        `json:"cookie"`
}

// Timewait reports whether s is a timewait socket (the lightweight socket that replaces a
// full one in TIME_WAIT, or in FIN_WAIT2 after its application closed it).
func (s Socket) Timewait() bool { return s.Timer == TimerTimewait || s.State == TimeWait }

// inet_diag constants (include/uapi/linux/inet_diag.h).
const (
	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
	inetDiagReqBytecode = 1
	inetDiagBCJmp       = 1
	inetDiagBCSEq       = 11
	inetDiagBCDEq       = 12
)

// Diag queries sock_diag in one network namespace.
type Diag struct {
	conn   *netlink.Conn
	filter Filter
}

// OpenDiag opens a sock_diag socket in the network namespace netns: "" for the current
// one, a name as `ip netns` gives it (/run/netns/NAME), or a path (/proc/PID/ns/net).
// The netlink socket is created on a thread switched into the namespace and belongs to it
// for its whole life. Only sockets matching f are returned by Dump (ports are filtered
// in the kernel by inet_diag bytecode).
func OpenDiag(netns string, f Filter) (*Diag, error) {
	cfg := &netlink.Config{}
	if netns != "" {
		nsf, err := os.Open(nsPath(netns))
		if err != nil {
			return nil, fmt.Errorf("network namespace %q: %w", netns, err)
		}
		defer nsf.Close()
		cfg.NetNS = int(nsf.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_INET_DIAG, cfg)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	return &Diag{conn: c, filter: f}, nil
}

// Close closes the netlink socket.
func (d *Diag) Close() error { return d.conn.Close() }

// Dump lists the TCP sockets (IPv4 and IPv6, every state, timewait and request sockets
// included) that match the filter.
func (d *Diag) Dump() ([]Socket, error) {
	ts, err := d.dumpTimed(nil)
	out := make([]Socket, len(ts))
	for i, t := range ts {
		out[i] = t.Socket
	}
	return out, err
}

// timedSocket is a Socket with the CLOCK_MONOTONIC window of the dump that reported it.
type timedSocket struct {
	Socket
	lo, hi time.Duration
}

// dumpTimed appends the sockets to out.
func (d *Diag) dumpTimed(out []timedSocket) ([]timedSocket, error) {
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		lo := MonoNow()
		msgs, err := d.conn.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
			Data:   diagRequest(fam, d.filter.Ports),
		})
		hi := MonoNow()
		if err != nil {
			return out, fmt.Errorf("sock_diag dump: %w", err)
		}
		for _, m := range msgs {
			s, err := parseDiagMsg(m.Data)
			if err != nil {
				return out, err
			}
			if d.filter.Match(s.Local, s.Remote) {
				out = append(out, timedSocket{s, lo, hi})
			}
		}
	}
	return out, nil
}

// diagRequest builds an inet_diag_req_v2 for TCP in every state, with a bytecode that
// keeps sockets whose source or destination port is one of ports.
func diagRequest(family uint8, ports []uint16) []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	// b[2] idiag_ext = 0: no extensions (tcp_info and the like are not needed).
	binary.NativeEndian.PutUint32(b[4:], 0xffffffff) // all states, NEW_SYN_RECV included
	if bc := portBytecode(ports); bc != nil {
		attr := make([]byte, 4+len(bc))
		binary.NativeEndian.PutUint16(attr[0:], uint16(4+len(bc)))
		binary.NativeEndian.PutUint16(attr[2:], inetDiagReqBytecode)
		copy(attr[4:], bc)
		b = append(b, attr...)
	}
	return b
}

// portBytecode compiles "sport == p1 || dport == p1 || sport == p2 ..." to inet_diag
// bytecode as ss does: each test is an op {code, yes, no} and an op holding the port in
// "no"; yes goes to the next op, no skips over the next op; a JMP after each test but the
// last jumps to the end (accept). Falling past the end rejects.
func portBytecode(ports []uint16) []byte {
	ports = uniqPorts(ports)
	if len(ports) == 0 {
		return nil
	}
	type cond struct {
		code uint8
		port uint16
	}
	var conds []cond
	for _, p := range ports {
		conds = append(conds, cond{inetDiagBCSEq, p}, cond{inetDiagBCDEq, p})
	}
	op := func(code, yes uint8, no uint16) []byte {
		b := make([]byte, 4)
		b[0], b[1] = code, yes
		binary.NativeEndian.PutUint16(b[2:], no)
		return b
	}
	var bc []byte
	for i := len(conds) - 1; i >= 0; i-- {
		c := append(op(conds[i].code, 8, 12), op(0, 0, conds[i].port)...)
		if len(bc) > 0 {
			c = append(c, op(inetDiagBCJmp, 4, uint16(len(bc)+4))...)
		}
		bc = append(c, bc...)
	}
	return bc
}

// parseDiagMsg decodes an inet_diag_msg (attributes after it are ignored).
func parseDiagMsg(b []byte) (Socket, error) {
	if len(b) < sizeofInetDiagMsg {
		return Socket{}, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(b), sizeofInetDiagMsg)
	}
	var s Socket
	var n int
	switch b[0] {
	case unix.AF_INET:
		s.Family, n = "AF_INET", 4
	case unix.AF_INET6:
		s.Family, n = "AF_INET6", 16
	default:
		return Socket{}, fmt.Errorf("inet_diag_msg of family %d", b[0])
	}
	s.State = State(b[1])
	s.Timer = TimerKind(b[2])
	s.Retrans = b[3]
	sport := binary.BigEndian.Uint16(b[4:])
	dport := binary.BigEndian.Uint16(b[6:])
	src, _ := netip.AddrFromSlice(b[8 : 8+n])
	dst, _ := netip.AddrFromSlice(b[24 : 24+n])
	s.Local = netip.AddrPortFrom(src.Unmap(), sport)
	s.Remote = netip.AddrPortFrom(dst.Unmap(), dport)
	// b[40:44] idiag_if
	s.Cookie = uint64(binary.NativeEndian.Uint32(b[44:])) | uint64(binary.NativeEndian.Uint32(b[48:]))<<32
	s.Expires = time.Duration(binary.NativeEndian.Uint32(b[52:])) * time.Millisecond
	s.RecvQ = binary.NativeEndian.Uint32(b[56:])
	s.SendQ = binary.NativeEndian.Uint32(b[60:])
	s.UID = binary.NativeEndian.Uint32(b[64:])
	s.Inode = binary.NativeEndian.Uint32(b[68:])
	if s.State == NewSynRecv {
		s.State = SynRecv
	}
	return s, nil
}
