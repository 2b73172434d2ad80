package apps

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runningServer is Main("server", ...) running in a goroutine.
type runningServer struct {
	addr    string
	cancel  context.CancelFunc
	lines   chan string // stdout lines after "ready"
	stderr  *syncBuffer
	exit    chan int
	records []Record
}

func startServer(t *testing.T, args ...string) *runningServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &runningServer{cancel: cancel, lines: make(chan string, 100), stderr: &syncBuffer{}, exit: make(chan int, 1)}
	go func() {
		code := Main(ctx, append([]string{"server", "--listen", "127.0.0.1:0"}, args...), pw, s.stderr)
		pw.Close()
		s.exit <- code
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		first := true
		for sc.Scan() {
			if first && sc.Text() == "ready" {
				first = false
				close(ready)
				continue
			}
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.exit:
		case <-time.After(5 * time.Second):
			t.Error("server did not exit after cancel")
		}
	})
	select {
	case <-ready:
	case code := <-s.exit:
		t.Fatalf("server exited %d before ready: %s", code, s.stderr)
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
	_, after, ok := strings.Cut(s.stderr.String(), "listening on ")
	if !ok {
		t.Fatalf("no listening address on stderr: %q", s.stderr)
	}
	s.addr, _, _ = strings.Cut(after, ",")
	return s
}

// record waits for the server's next JSON record.
func (s *runningServer) record(t *testing.T) Record {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatalf("server stdout closed; stderr: %s", s.stderr)
		}
		var r Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("server line %q: %v", l, err)
		}
		s.records = append(s.records, r)
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("no server record; stderr: %s", s.stderr)
	}
	return Record{}
}

// wait waits for the server to exit by itself and returns its exit code.
func (s *runningServer) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.exit:
		s.exit <- code // for Cleanup
		return code
	case <-time.After(10 * time.Second):
		t.Fatalf("server did not exit; stderr: %s", s.stderr)
	}
	return -1
}

func runClient(t *testing.T, args ...string) (int, []Record, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), append([]string{"client"}, args...), &stdout, &stderr)
	var recs []Record
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if l == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("client line %q: %v", l, err)
		}
		recs = append(recs, r)
	}
	return code, recs, stderr.String()
}

func TestModePairs(t *testing.T) {
	req, reply := int64(len(RequestLine(0))), int64(len(ReplyPrefix+RequestLine(0)))
	tests := []struct {
		name         string
		server       []string
		client       []string
		serverSent   int64
		serverRecv   int64
		clientSent   int64
		clientRecv   int64
		clientErr    string
		clientExit   int
		serverExit   int
		serverStayUp bool // leak: the server holds its sockets until cancelled
	}{
		{name: "baseline", server: []string{"--mode", "reply-wait-close"}, client: []string{"--mode", "request-close"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "baseline-close-delay", server: []string{"--mode", "reply-wait-close", "--close-delay", "50ms"}, client: []string{"--mode", "request-close"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "server-closes-first", server: []string{"--mode", "reply-close"}, client: []string{"--mode", "request-close"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "send-delay", server: []string{"--mode", "reply-wait-close"}, client: []string{"--mode", "request-close", "--send-delay", "30ms"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "shutdown", server: []string{"--mode", "reply-wait-close"}, client: []string{"--mode", "request-shutdown"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "shutdown-server-first", server: []string{"--mode", "reply-close"}, client: []string{"--mode", "request-shutdown"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "echo-close", server: []string{"--mode", "echo-close"}, client: []string{"--mode", "send-close", "--bytes", "5000"},
			serverRecv: 5000, clientSent: 5000},
		{name: "sink", server: []string{"--mode", "sink"}, client: []string{"--mode", "send-close", "--bytes", "300000"},
			serverRecv: 300000, clientSent: 300000},
		{name: "sink-half-closed-client", server: []string{"--mode", "sink"}, client: []string{"--mode", "send-shutdown-read", "--bytes", "10", "--expect-bytes", "0"},
			serverRecv: 10, clientSent: 10},
		{name: "half-close", server: []string{"--mode", "half-close", "--lines", "4", "--interval", "5ms"}, client: []string{"--mode", "send-shutdown-read", "--bytes", "10", "--expect-bytes", "40"},
			serverSent: 40, serverRecv: 10, clientSent: 10, clientRecv: 40},
		{name: "half-close-wrong-count", server: []string{"--mode", "half-close", "--lines", "2", "--interval", "1ms"}, client: []string{"--mode", "send-shutdown-read", "--bytes", "10", "--expect-bytes", "40"},
			serverSent: 20, serverRecv: 10, clientSent: 10, clientRecv: 20, clientErr: "received 20 bytes, want 40", clientExit: 1},
		{name: "simultaneous", server: []string{"--mode", "simultaneous"}, client: []string{"--mode", "request-read-close"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply},
		{name: "leak", server: []string{"--mode", "leak"}, client: []string{"--mode", "send-close", "--bytes", "7"},
			serverRecv: 7, clientSent: 7, serverStayUp: true},
		{name: "leak-hold", server: []string{"--mode", "leak", "--hold", "50ms"}, client: []string{"--mode", "send-close", "--bytes", "7"},
			serverRecv: 7, clientSent: 7},
		{name: "expect-reset-gets-eof", server: []string{"--mode", "reply-close"}, client: []string{"--mode", "expect-reset"},
			serverSent: reply, serverRecv: req, clientSent: req, clientRecv: reply, clientErr: "EOF", clientExit: 1},
		{name: "no-reply-timeout", server: []string{"--mode", "sink"}, client: []string{"--mode", "request-close", "--timeout", "200ms"},
			serverRecv: req, clientSent: req, clientErr: "timeout", clientExit: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, tt.server...)
			code, recs, stderr := runClient(t, append([]string{"--connect", s.addr}, tt.client...)...)
			if code != tt.clientExit {
				t.Errorf("client exit %d, want %d; stderr: %s", code, tt.clientExit, stderr)
			}
			if len(recs) != 1 {
				t.Fatalf("client records %+v, want 1", recs)
			}
			c := recs[0]
			if c.Sent != tt.clientSent || c.Received != tt.clientRecv || c.Error != tt.clientErr {
				t.Errorf("client record %+v, want sent %d received %d error %q", c, tt.clientSent, tt.clientRecv, tt.clientErr)
			}
			if c.Remote != s.addr || c.Local == "" {
				t.Errorf("client record addresses %+v, server %s", c, s.addr)
			}
			sr := s.record(t)
			if sr.Sent != tt.serverSent || sr.Received != tt.serverRecv || sr.Error != "" || sr.Conn != 0 {
				t.Errorf("server record %+v, want sent %d received %d", sr, tt.serverSent, tt.serverRecv)
			}
			if sr.Remote != c.Local || sr.Local != c.Remote {
				t.Errorf("server record %+v does not mirror client record %+v", sr, c)
			}
			if tt.serverStayUp {
				select {
				case code := <-s.exit:
					t.Fatalf("leak server exited (%d) while it should hold its socket", code)
				case <-time.After(100 * time.Millisecond):
				}
				if st := tcpState(t, sr.Local, sr.Remote); st != "CLOSE_WAIT" {
					t.Errorf("leaked socket in state %q, want CLOSE_WAIT", st)
				}
				s.cancel()
			}
			if code := s.wait(t); code != tt.serverExit {
				t.Errorf("server exit %d, want %d; stderr: %s", code, tt.serverExit, s.stderr)
			}
		})
	}
}

// tcpState finds the socket local->remote in /proc/net/tcp and returns its state name.
func tcpState(t *testing.T, local, remote string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	hexAddr := func(s string) string {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			t.Fatal(err)
		}
		a := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	}
	l, r := hexAddr(local), hexAddr(remote)
	states := map[string]string{"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == l && f[2] == r {
			return states[f[3]]
		}
	}
	return ""
}

// resetServer accepts one connection, reads the request line, replies, (if waitEOF) reads
// until the client's FIN, and aborts the connection (SO_LINGER 0): the client receives RST.
func resetServer(t *testing.T, waitEOF bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		io.WriteString(c, ReplyPrefix+line)
		if waitEOF {
			io.Copy(io.Discard, br)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	return ln.Addr().String()
}

func TestExpectReset(t *testing.T) {
	addr := resetServer(t, false)
	code, recs, stderr := runClient(t, "--connect", addr, "--mode", "expect-reset")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	if len(recs) != 1 || recs[0].Error != "ECONNRESET" || recs[0].Sent != int64(len(RequestLine(0))) {
		t.Fatalf("records %+v", recs)
	}
}

func TestShutdownSeesReset(t *testing.T) {
	// request-shutdown waits for the server's FIN after its own; a reset instead fails it.
	addr := resetServer(t, true)
	code, recs, stderr := runClient(t, "--connect", addr, "--mode", "request-shutdown")
	if code != ExitFail || len(recs) != 1 || recs[0].Error != "ECONNRESET" {
		t.Fatalf("request-shutdown against a resetting server: exit %d, records %+v, stderr %s", code, recs, stderr)
	}
}

func TestManyConnections(t *testing.T) {
	s := startServer(t, "--mode", "reply-wait-close", "--count", "3")
	code, recs, stderr := runClient(t, "--connect", s.addr, "--mode", "request-close", "--count", "3", "--pause", "1ms")
	if code != ExitOK || len(recs) != 3 {
		t.Fatalf("client exit %d, records %+v, stderr %s", code, recs, stderr)
	}
	for i, r := range recs {
		if r.Conn != i || r.Error != "" {
			t.Errorf("client record %d: %+v", i, r)
		}
	}
	seen := map[int]bool{}
	for range 3 {
		r := s.record(t)
		seen[r.Conn] = true
		if r.Error != "" {
			t.Errorf("server record %+v", r)
		}
	}
	if len(seen) != 3 {
		t.Errorf("server conns %v", seen)
	}
	if code := s.wait(t); code != ExitOK {
		t.Errorf("server exit %d: %s", code, s.stderr)
	}
}

func TestLocalPort(t *testing.T) {
	// Find a free port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	s := startServer(t, "--mode", "reply-wait-close")
	code, recs, stderr := runClient(t, "--connect", s.addr, "--mode", "request-close", "--local-port", strconv.Itoa(port))
	if code != ExitOK || len(recs) != 1 {
		t.Fatalf("client exit %d, records %+v, stderr %s", code, recs, stderr)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", port); recs[0].Local != want {
		t.Errorf("local %s, want %s", recs[0].Local, want)
	}
}

func TestConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, recs, _ := runClient(t, "--connect", addr, "--mode", "request-close")
	if code != ExitFail || len(recs) != 1 || recs[0].Error != "ECONNREFUSED" {
		t.Fatalf("exit %d, records %+v", code, recs)
	}
}

func TestServerStoppedEarly(t *testing.T) {
	s := startServer(t, "--mode", "sink", "--count", "2")
	s.cancel()
	if code := s.wait(t); code != ExitFail {
		t.Errorf("server stopped after 0 of 2 connections: exit %d, want %d", code, ExitFail)
	}
	s2 := startServer(t, "--mode", "sink", "--count", "0")
	s2.cancel()
	if code := s2.wait(t); code != ExitOK {
		t.Errorf("forever server stopped: exit %d, want %d", code, ExitOK)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"server", "--mode", "sink"},
		{"server", "--listen", "127.0.0.1:0", "--mode", "nope"},
		{"server", "--listen", "127.0.0.1:0", "--mode", "sink", "extra"},
		{"server", "--bogus"},
		{"client", "--mode", "request-close"},
		{"client", "--connect", "127.0.0.1:1", "--mode", "nope"},
		{"client", "--connect", "127.0.0.1:1", "--mode", "send-close", "--count", "0"},
		{"client", "--connect", "127.0.0.1:1", "--mode", "send-close", "--local-port", "70000"},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, &out, &errb); code != ExitUsage {
			t.Errorf("Main(%q) = %d, want %d", args, code, ExitUsage)
		}
		if errb.Len() == 0 {
			t.Errorf("Main(%q): nothing on stderr", args)
		}
	}
	for _, args := range [][]string{{"server", "-h"}, {"client", "-help"}, {"help"}} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), args, &out, &errb); code != ExitOK {
			t.Errorf("Main(%q) = %d, want 0", args, code)
		}
	}
}
