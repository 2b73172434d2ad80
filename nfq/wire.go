package nfq

// The nfnetlink_queue messages finproxy exchanges with the kernel
// (include/uapi/linux/netfilter/nfnetlink_queue.h), encoded and decoded here without
// allocation: the hot path (one packet message in, one verdict message out) never goes
// through a general netlink library.

import (
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	nfgenLen    = 4  // struct nfgenmsg
	nlaHdrLen   = 4  // struct nlattr

	nfnlSubsysQueue = 3 // NFNL_SUBSYS_QUEUE

	// Message types, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_*.
	msgPacket  = nfnlSubsysQueue << 8   // NFQNL_MSG_PACKET (0): kernel -> user
	msgVerdict = nfnlSubsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig  = nfnlSubsysQueue<<8 | 2 // NFQNL_MSG_CONFIG

	// Packet attributes (enum nfqnl_attr_type).
	attrPacketHdr  = 1  // struct nfqnl_msg_packet_hdr: be32 id, be16 hw_protocol, u8 hook
	attrVerdictHdr = 2  // struct nfqnl_msg_verdict_hdr: be32 verdict, be32 id
	attrTimestamp  = 4  // struct nfqnl_msg_packet_timestamp: be64 sec, be64 usec
	attrPayload    = 10 // the packet
	attrCapLen     = 13 // be32: the packet's length when the copy was truncated

	// Config attributes (enum nfqnl_attr_config).
	cfgCmd    = 1 // struct nfqnl_msg_config_cmd: u8 command, u8 pad, be16 pf
	cfgParams = 2 // struct nfqnl_msg_config_params: be32 copy_range, u8 copy_mode
	cfgMaxLen = 3 // be32
	cfgMask   = 4 // be32
	cfgFlags  = 5 // be32

	cmdBind = 1 // NFQNL_CFG_CMD_BIND

	copyPacket = 2 // NFQNL_COPY_PACKET

	flagFailOpen = 1 // NFQA_CFG_F_FAIL_OPEN

	verdictDrop   = 0 // NF_DROP
	verdictAccept = 1 // NF_ACCEPT

	nlaTypeMask = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER

	// verdictLen is a verdict message without a payload.
	verdictLen = nlmsgHdrLen + nfgenLen + nlaHdrLen + 8
)

var errShort = errors.New("nfq: truncated netlink message")

func align4(n int) int { return (n + 3) &^ 3 }

// putNlmsg writes a netlink header.
func putNlmsg(b []byte, length int, typ, flags uint16) {
	binary.NativeEndian.PutUint32(b[0:], uint32(length))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], 0)  // sequence
	binary.NativeEndian.PutUint32(b[12:], 0) // port id: the kernel
}

// putNfgen writes struct nfgenmsg for queue num.
func putNfgen(b []byte, num uint16) {
	b[0] = unix.AF_UNSPEC
	b[1] = unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[2:], num)
}

// putAttr writes an attribute header for a value of n bytes and returns the offset past
// its (aligned) value.
func putAttr(b []byte, off int, typ uint16, n int) int {
	binary.NativeEndian.PutUint16(b[off:], uint16(nlaHdrLen+n))
	binary.NativeEndian.PutUint16(b[off+2:], typ)
	return off + nlaHdrLen + align4(n)
}

// encodeVerdict writes the verdict message for packet id of queue num into b (at least
// verdictLen bytes, plus room for the payload when data is not nil) and returns it.
func encodeVerdict(b []byte, num uint16, id, verdict uint32, data []byte) []byte {
	n := verdictLen
	if data != nil {
		n += nlaHdrLen + align4(len(data))
	}
	b = b[:n]
	putNlmsg(b, n, msgVerdict, unix.NLM_F_REQUEST)
	putNfgen(b[nlmsgHdrLen:], num)
	off := putAttr(b, nlmsgHdrLen+nfgenLen, attrVerdictHdr, 8)
	binary.BigEndian.PutUint32(b[off-8:], verdict)
	binary.BigEndian.PutUint32(b[off-4:], id)
	if data != nil {
		start := off + nlaHdrLen
		end := putAttr(b, off, attrPayload, len(data))
		copy(b[start:], data)
		clear(b[start+len(data) : end])
	}
	return b
}

// configMsg returns a NFQNL_MSG_CONFIG message body (nfgenmsg and attributes) binding
// queue num, or setting its parameters, as the kernel reads them.
func configBind(num uint16) []byte {
	b := make([]byte, nfgenLen+nlaHdrLen+4)
	putNfgen(b, num)
	putAttr(b, nfgenLen, cfgCmd, 4)
	b[nfgenLen+nlaHdrLen] = cmdBind
	return b
}

func configParams(num uint16, copyRange, maxLen, flags uint32) []byte {
	b := make([]byte, nfgenLen+3*nlaHdrLen+align4(5)+4+4)
	putNfgen(b, num)
	off := putAttr(b, nfgenLen, cfgParams, 5)
	binary.BigEndian.PutUint32(b[off-8:], copyRange)
	b[off-4] = copyPacket
	off = putAttr(b, off, cfgMaxLen, 4)
	binary.BigEndian.PutUint32(b[off-4:], maxLen)
	if flags != 0 {
		b = append(b, make([]byte, 2*(nlaHdrLen+4))...)
		off = putAttr(b, off, cfgMask, 4)
		binary.BigEndian.PutUint32(b[off-4:], flags)
		off = putAttr(b, off, cfgFlags, 4)
		binary.BigEndian.PutUint32(b[off-4:], flags)
	}
	return b[:off]
}

// packetMsg is what a NFQNL_MSG_PACKET message carries for finproxy.
type packetMsg struct {
	id       uint32
	hasID    bool
	payload  []byte // points into the receive buffer
	capLen   uint32
	hasCap   bool
	tstamp   time.Time
	hasStamp bool
}

// nextMsg splits the first netlink message off b: its type, its payload (after the
// netlink header) and the rest of b.
func nextMsg(b []byte) (typ uint16, body, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return 0, nil, nil, errShort
	}
	n := int(binary.NativeEndian.Uint32(b[0:]))
	if n < nlmsgHdrLen || n > len(b) {
		return 0, nil, nil, errShort
	}
	typ = binary.NativeEndian.Uint16(b[4:])
	body = b[nlmsgHdrLen:n]
	if a := align4(n); a < len(b) {
		rest = b[a:]
	}
	return typ, body, rest, nil
}

// errnoOf decodes the error code of an NLMSG_ERROR message body (0: an acknowledgment).
func errnoOf(body []byte) (unix.Errno, error) {
	if len(body) < 4 {
		return 0, errShort
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(body))), nil
}

// parsePacket decodes a NFQNL_MSG_PACKET body (after the netlink header).
func parsePacket(body []byte, m *packetMsg) error {
	*m = packetMsg{}
	if len(body) < nfgenLen {
		return errShort
	}
	b := body[nfgenLen:]
	for len(b) >= nlaHdrLen {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		if l < nlaHdrLen || l > len(b) {
			return errShort
		}
		v := b[nlaHdrLen:l]
		switch binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask {
		case attrPacketHdr:
			if len(v) < 4 {
				return errShort
			}
			m.id, m.hasID = binary.BigEndian.Uint32(v), true
		case attrPayload:
			m.payload = v
		case attrCapLen:
			if len(v) >= 4 {
				m.capLen, m.hasCap = binary.BigEndian.Uint32(v), true
			}
		case attrTimestamp:
			if len(v) >= 16 {
				sec, usec := int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
				m.tstamp, m.hasStamp = time.Unix(sec, usec*1000), true
			}
		}
		if a := align4(l); a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
	}
	return nil
}
