package nfq

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEncodeVerdict(t *testing.T) {
	var b [verdictLen]byte
	msg := encodeVerdict(b[:], 7401, 0x01020304, verdictAccept, nil)
	// nlmsghdr (native endian): len 32, type 0x0301, flags NLM_F_REQUEST, seq 0, pid 0;
	// nfgenmsg: AF_UNSPEC, v0, res_id 7401 (big endian); NFQA_VERDICT_HDR: len 12, type 2,
	// verdict 1, id (big endian).
	want := make([]byte, 0, 32)
	want = binary.NativeEndian.AppendUint32(want, 32)
	want = binary.NativeEndian.AppendUint16(want, 0x0301)
	want = binary.NativeEndian.AppendUint16(want, unix.NLM_F_REQUEST)
	want = append(want, make([]byte, 8)...)
	want = append(want, 0, 0, 0x1c, 0xe9)
	want = binary.NativeEndian.AppendUint16(want, 12)
	want = binary.NativeEndian.AppendUint16(want, 2)
	want = append(want, 0, 0, 0, 1, 1, 2, 3, 4)
	if !bytes.Equal(msg, want) {
		t.Errorf("verdict message\n got %s\nwant %s", hex.EncodeToString(msg), hex.EncodeToString(want))
	}

	data := []byte{0x45, 1, 2, 3, 4} // 5 bytes: padded to 8
	big := make([]byte, verdictLen+nlaHdrLen+8)
	msg = encodeVerdict(big, 1, 9, verdictDrop, data)
	if len(msg) != 32+4+8 || binary.NativeEndian.Uint32(msg) != uint32(len(msg)) {
		t.Fatalf("modified verdict: %d bytes, header says %d", len(msg), binary.NativeEndian.Uint32(msg))
	}
	a := msg[32:]
	if l, typ := binary.NativeEndian.Uint16(a), binary.NativeEndian.Uint16(a[2:]); l != 9 || typ != attrPayload {
		t.Errorf("payload attribute: len %d type %d, want 9 and %d", l, typ, attrPayload)
	}
	if !bytes.Equal(a[4:9], data) || !bytes.Equal(a[9:12], []byte{0, 0, 0}) {
		t.Errorf("payload %x", a[4:])
	}
	if v := binary.BigEndian.Uint32(msg[24:]); v != verdictDrop {
		t.Errorf("verdict %d", v)
	}
}

func TestConfigMessages(t *testing.T) {
	if got, want := hex.EncodeToString(configBind(0x0102)), "00000102"+hex.EncodeToString(nla(cfgCmd, []byte{cmdBind, 0, 0, 0})); got != want {
		t.Errorf("bind: %s, want %s", got, want)
	}
	params := append(nla(cfgParams, []byte{0, 0, 0xff, 0xff, copyPacket}), nla(cfgMaxLen, []byte{0, 0, 0x10, 0})...)
	if got, want := hex.EncodeToString(configParams(3, 0xffff, 4096, 0)), "00000003"+hex.EncodeToString(params); got != want {
		t.Errorf("params: %s, want %s", got, want)
	}
	flags := append(params, append(nla(cfgMask, []byte{0, 0, 0, 1}), nla(cfgFlags, []byte{0, 0, 0, 1})...)...)
	if got, want := hex.EncodeToString(configParams(3, 0xffff, 4096, flagFailOpen)), "00000003"+hex.EncodeToString(flags); got != want {
		t.Errorf("params with fail-open: %s, want %s", got, want)
	}
}

// nla encodes one attribute the way the kernel lays it out.
func nla(typ uint16, v []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// packetMessage builds a NFQNL_MSG_PACKET as the kernel sends it.
func packetMessage(id uint32, payload []byte, extra ...[]byte) []byte {
	body := []byte{unix.AF_INET, 0, 0, 7}
	body = append(body, nla(attrPacketHdr, []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id), 8, 0, 3})...)
	for _, e := range extra {
		body = append(body, e...)
	}
	body = append(body, nla(attrPayload|0x4000, payload)...) // NLA_F_NET_BYTEORDER is ignored
	h := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+len(body)))
	h = binary.NativeEndian.AppendUint16(h, msgPacket)
	h = append(h, make([]byte, 10)...)
	return append(h, body...)
}

func TestParsePacket(t *testing.T) {
	payload := []byte("0123456789") // 10 bytes: the message is padded
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1763782861)
	binary.BigEndian.PutUint64(ts[8:], 123456)
	msg := packetMessage(0xdeadbeef, payload, nla(attrCapLen, []byte{0, 1, 0, 0}), nla(attrTimestamp, ts), nla(3, []byte{0, 0, 0, 1}))
	// Two messages in one datagram, then an error reply.
	errMsg := binary.NativeEndian.AppendUint32(nil, 16+4)
	errMsg = binary.NativeEndian.AppendUint16(errMsg, unix.NLMSG_ERROR)
	errMsg = append(errMsg, make([]byte, 10)...)
	enoent := int32(unix.ENOENT)
	errMsg = binary.NativeEndian.AppendUint32(errMsg, uint32(-enoent))
	dgram := append(append(append([]byte(nil), msg...), packetMessage(1, []byte{1})...), errMsg...)

	var m packetMsg
	typ, body, rest, err := nextMsg(dgram)
	if err != nil || typ != msgPacket {
		t.Fatalf("first message: type %#x, %v", typ, err)
	}
	if err := parsePacket(body, &m); err != nil {
		t.Fatal(err)
	}
	if !m.hasID || m.id != 0xdeadbeef || !bytes.Equal(m.payload, payload) || !m.hasCap || m.capLen != 65536 ||
		!m.hasStamp || !m.tstamp.Equal(time.Unix(1763782861, 123456000)) {
		t.Errorf("parsed %+v", m)
	}
	typ, body, rest, err = nextMsg(rest)
	if err != nil || typ != msgPacket || parsePacket(body, &m) != nil || m.id != 1 || m.hasCap || m.hasStamp || !bytes.Equal(m.payload, []byte{1}) {
		t.Fatalf("second message: type %#x, %v, %+v", typ, err, m)
	}
	typ, body, rest, err = nextMsg(rest)
	if err != nil || typ != unix.NLMSG_ERROR || rest != nil {
		t.Fatalf("third message: type %#x, %v, rest %x", typ, err, rest)
	}
	if errno, err := errnoOf(body); err != nil || errno != unix.ENOENT {
		t.Errorf("errno %v, %v", errno, err)
	}
}

func TestParseMalformed(t *testing.T) {
	msg := packetMessage(5, []byte("abc"))
	for n := range len(msg) {
		typ, body, _, err := nextMsg(msg[:n])
		if err == nil {
			var m packetMsg
			_ = parsePacket(body, &m)
			t.Errorf("%d of %d bytes: no error (type %#x)", n, len(msg), typ)
		}
	}
	// An attribute claiming more than there is.
	bad := append([]byte(nil), msg...)
	binary.NativeEndian.PutUint16(bad[nlmsgHdrLen+nfgenLen:], 200)
	_, body, _, _ := nextMsg(bad)
	var m packetMsg
	if err := parsePacket(body, &m); err == nil {
		t.Error("oversized attribute accepted")
	}
}

func FuzzParsePacket(f *testing.F) {
	f.Add(packetMessage(5, []byte("abc")))
	f.Add(packetMessage(1<<31, make([]byte, 61), nla(attrCapLen, []byte{0, 0, 1, 0})))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m packetMsg
		for len(b) > 0 {
			typ, body, rest, err := nextMsg(b)
			if err != nil {
				return
			}
			if typ == msgPacket && parsePacket(body, &m) == nil && m.payload != nil {
				if len(m.payload) > len(body) {
					t.Fatalf("payload of %d bytes from a %d-byte body", len(m.payload), len(body))
				}
			}
			b = rest
		}
	})
}
