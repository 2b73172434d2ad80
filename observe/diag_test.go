package observe

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/diag/sockets.hex holds inet_diag_msg records (attributes included) recorded
// from a namespace on this kernel: each preceded by a comment line.
func TestParseDiagMsgRecorded(t *testing.T) {
	f, err := os.Open("testdata/diag/sockets.hex")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []Socket
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		b, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		s, err := parseDiagMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	want := []struct {
		family        string
		state         State
		local, remote string
		timer         TimerKind
		timewait      bool
		inodeZero     bool
		recvQ, sendQ  uint32
	}{
		{"AF_INET", Listen, "127.0.0.1:9020", "0.0.0.0:0", TimerOff, false, false, 0, 128},
		{"AF_INET", FinWait2, "127.0.0.1:54748", "127.0.0.1:9020", TimerTimewait, true, true, 0, 0},
		{"AF_INET", TimeWait, "127.0.0.1:54752", "127.0.0.1:9020", TimerTimewait, true, true, 0, 0},
		{"AF_INET", CloseWait, "127.0.0.1:9020", "127.0.0.1:54748", TimerOff, false, false, 1, 0},
		{"AF_INET6", Listen, "[::1]:9021", "[::]:0", TimerOff, false, false, 0, 128},
		{"AF_INET6", FinWait2, "[::1]:38334", "[::1]:9021", TimerTimewait, true, true, 0, 0},
		{"AF_INET6", TimeWait, "[::1]:38348", "[::1]:9021", TimerTimewait, true, true, 0, 0},
		{"AF_INET6", CloseWait, "[::1]:9021", "[::1]:38334", TimerOff, false, false, 1, 0},
		{"AF_INET", Established, "127.0.0.1:53886", "127.0.0.1:9022", TimerOff, false, false, 5, 0},
		{"AF_INET6", Listen, "[::]:9022", "[::]:0", TimerOff, false, false, 0, 128},
		// A dual-stack socket: IPv4-mapped addresses, unmapped.
		{"AF_INET6", Established, "127.0.0.1:9022", "127.0.0.1:53886", TimerOff, false, false, 3, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("%d sockets, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Family != w.family || g.State != w.state || g.Local != mustAP(w.local) || g.Remote != mustAP(w.remote) ||
			g.Timer != w.timer || g.Timewait() != w.timewait || (g.Inode == 0) != w.inodeZero || g.RecvQ != w.recvQ || g.SendQ != w.sendQ {
			t.Errorf("socket %d: %+v, want %+v", i, g, w)
		}
		if g.Timewait() && (g.Expires < 50*time.Second || g.Expires > 60*time.Second || g.Expires%time.Millisecond != 0) {
			t.Errorf("socket %d: timewait expires %v", i, g.Expires)
		}
		if g.Cookie == 0 {
			t.Errorf("socket %d: no cookie", i)
		}
	}
	if _, err := parseDiagMsg(make([]byte, 71)); err == nil {
		t.Error("a short message parsed")
	}
	bad := make([]byte, 72)
	bad[0] = 1 // AF_UNIX
	if _, err := parseDiagMsg(bad); err == nil {
		t.Error("a message of family AF_UNIX parsed")
	}
}

// bcRun and bcAudit are the kernel's inet_diag_bc_run and inet_diag_bc_audit
// (net/ipv4/inet_diag.c) reduced to the port operations.
func bcRun(bc []byte, sport, dport uint16) bool {
	for len(bc) > 0 {
		code, yes, no := bc[0], int(bc[1]), int(binary.NativeEndian.Uint16(bc[2:]))
		ok := true
		switch code {
		case inetDiagBCJmp:
			ok = false
		case inetDiagBCSEq:
			ok = sport == binary.NativeEndian.Uint16(bc[6:])
		case inetDiagBCDEq:
			ok = dport == binary.NativeEndian.Uint16(bc[6:])
		}
		step := no
		if ok {
			step = yes
		}
		if step > len(bc) {
			return false
		}
		bc = bc[step:]
	}
	return true
}

func bcAudit(t *testing.T, bc []byte) {
	t.Helper()
	total := len(bc)
	reachable := map[int]bool{} // remaining lengths at op boundaries on the yes path
	for rem := total; rem > 0; {
		reachable[rem] = true
		op := bc[total-rem:]
		minLen := 4
		if op[0] == inetDiagBCSEq || op[0] == inetDiagBCDEq {
			minLen = 8
		}
		yes, no := int(op[1]), int(binary.NativeEndian.Uint16(op[2:]))
		if no < minLen || no > rem+4 || no&3 != 0 {
			t.Fatalf("op at %d: bad no %d", total-rem, no)
		}
		if yes < minLen || yes > rem+4 || yes&3 != 0 {
			t.Fatalf("op at %d: bad yes %d", total-rem, yes)
		}
		rem -= yes
		if rem < 0 {
			t.Fatalf("yes path runs past the end")
		}
	}
	// Every "no" jump inside the code must land on an op boundary of the yes path.
	for rem := total; rem > 0; {
		op := bc[total-rem:]
		if no := int(binary.NativeEndian.Uint16(op[2:])); no < rem && !reachable[rem-no] {
			t.Fatalf("op at %d: no jumps to %d, not an op", total-rem, total-rem+no)
		}
		rem -= int(op[1])
	}
}

func TestPortBytecode(t *testing.T) {
	if portBytecode(nil) != nil {
		t.Error("bytecode without ports")
	}
	for _, ports := range [][]uint16{{80}, {8080, 443}, {1, 2, 3, 65535}} {
		bc := portBytecode(ports)
		bcAudit(t, bc)
		for _, sp := range []uint16{1, 2, 3, 80, 443, 8080, 9999, 65535} {
			for _, dp := range []uint16{1, 80, 5000, 8080, 65535} {
				want := false
				for _, p := range ports {
					want = want || sp == p || dp == p
				}
				if got := bcRun(bc, sp, dp); got != want {
					t.Errorf("ports %v: sport %d dport %d: %v, want %v", ports, sp, dp, got, want)
				}
			}
		}
	}
	req := diagRequest(10, []uint16{80})
	if len(req) != sizeofInetDiagReqV2+4+len(portBytecode([]uint16{80})) || req[0] != 10 || req[1] != 6 {
		t.Errorf("request % x", req)
	}
	if binary.NativeEndian.Uint16(req[sizeofInetDiagReqV2+2:]) != inetDiagReqBytecode {
		t.Error("no bytecode attribute")
	}
}
