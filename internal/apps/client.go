package apps

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Client modes. Each names what the client does on every connection.
const (
	// ClientRequestClose sends a line, reads the reply line, then close()s: the client
	// closes first and its socket is orphaned at once.
	ClientRequestClose = "request-close"
	// ClientRequestShutdown sends a line, reads the reply line, shutdown(SHUT_WR)s, reads
	// until EOF, then closes: the application holds its socket until the server's FIN.
	ClientRequestShutdown = "request-shutdown"
	// ClientSendClose sends --bytes bytes, then closes.
	ClientSendClose = "send-close"
	// ClientSendShutdownRead sends --bytes bytes, shutdown(SHUT_WR)s, reads all the server
	// sends until EOF (the record's "received"), then closes.
	ClientSendShutdownRead = "send-shutdown-read"
	// ClientRequestReadClose sends a line, reads the reply line, closes at once (the
	// partner of server mode simultaneous).
	ClientRequestReadClose = "request-read-close"
	// ClientExpectReset sends a line and reads until an error; it succeeds only if the
	// error is ECONNRESET.
	ClientExpectReset = "expect-reset"
)

var clientModes = []string{ClientRequestClose, ClientRequestShutdown, ClientSendClose, ClientSendShutdownRead, ClientRequestReadClose, ClientExpectReset}

// RequestLine is the line the client sends on connection i (from 0).
func RequestLine(i int) string { return fmt.Sprintf("request %d\n", i) }

// Payload returns the n bytes sent by the send-* modes: lower-case letters, repeating.
func Payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

type clientConfig struct {
	connect     string
	mode        string
	count       int
	timeout     time.Duration
	bytes       int
	localPort   int
	pause       time.Duration
	sendDelay   time.Duration
	expectBytes int64
}

func clientFlags(stderr io.Writer) (*flag.FlagSet, *clientConfig) {
	c := &clientConfig{}
	fs := flag.NewFlagSet("app client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.connect, "connect", "", "server `ADDR:PORT` ([v6addr]:port for IPv6)")
	fs.StringVar(&c.mode, "mode", "", "`MODE`: "+strings.Join(clientModes, ", "))
	fs.IntVar(&c.count, "count", 1, "make `N` connections, one after the other")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline for each connection, from connect to close")
	fs.IntVar(&c.bytes, "bytes", 1000, "send-close, send-shutdown-read: bytes to send")
	fs.IntVar(&c.localPort, "local-port", 0, "bind this local `PORT` (with SO_REUSEADDR, so that it can be reused while in TIME_WAIT); 0: ephemeral")
	fs.DurationVar(&c.pause, "pause", 0, "wait between connections")
	fs.DurationVar(&c.sendDelay, "send-delay", 0, "wait this long after connecting before sending anything (so that only the handshake's own ACK can complete it)")
	fs.Int64Var(&c.expectBytes, "expect-bytes", -1, "send-shutdown-read: fail unless exactly this many bytes are received (-1: any)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: app client --connect ADDR:PORT --mode MODE [flags]
Makes TCP connections one after the other, printing one JSON record per connection on
stdout; exits 0 only if every connection did what its mode expects. Modes:
  request-close       send a line, read the reply, close()
  request-shutdown    send a line, read the reply, shutdown(SHUT_WR), read until EOF, close
  send-close          send --bytes bytes, close()
  send-shutdown-read  send --bytes bytes, shutdown(SHUT_WR), read until EOF, close
  request-read-close  send a line, read the reply, close() at once (simultaneous close)
  expect-reset        send a line, read until an error; succeed only on ECONNRESET
Flags:
`)
		fs.PrintDefaults()
	}
	return fs, c
}

func clientMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, c := clientFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "app client: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	case c.connect == "":
		fmt.Fprintln(stderr, "app client: --connect is required")
		return ExitUsage
	case !slices.Contains(clientModes, c.mode):
		fmt.Fprintf(stderr, "app client: --mode %q: want one of %s\n", c.mode, strings.Join(clientModes, ", "))
		return ExitUsage
	case c.count < 1:
		fmt.Fprintln(stderr, "app client: --count must be at least 1")
		return ExitUsage
	case c.timeout <= 0 || c.bytes < 0 || c.pause < 0 || c.sendDelay < 0 || c.localPort < 0 || c.localPort > 65535:
		fmt.Fprintln(stderr, "app client: bad --timeout, --bytes, --pause or --local-port")
		return ExitUsage
	}
	out := &output{w: stdout}
	errOut := &output{w: stderr}
	code := ExitOK
	for i := 0; i < c.count; i++ {
		if i > 0 && c.pause > 0 {
			t := time.NewTimer(c.pause)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if ctx.Err() != nil {
			errOut.line(fmt.Sprintf("app client: stopped before connection %d", i))
			return ExitFail
		}
		rec, err := runConn(ctx, c, i)
		out.record(rec)
		if err != nil {
			errOut.line(fmt.Sprintf("app client: conn %d: %v", i, err))
			code = ExitFail
		}
	}
	return code
}

// runConn makes connection i and returns its record, and an error unless the connection
// did what the mode expects.
func runConn(ctx context.Context, c *clientConfig, i int) (Record, error) {
	rec := Record{Conn: i}
	start := time.Now()
	deadline := start.Add(c.timeout)
	d := net.Dialer{
		Deadline:  deadline,
		KeepAlive: -1, // no keepalive probes on the wire
	}
	if c.localPort > 0 {
		d.LocalAddr = &net.TCPAddr{Port: c.localPort}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := d.DialContext(ctx, "tcp", c.connect)
	if err != nil {
		rec.Error = errName(err)
		rec.ElapsedMS = elapsedMS(start)
		return rec, fmt.Errorf("connect: %w", err)
	}
	tc := conn.(*net.TCPConn)
	rec.Local, rec.Remote = conn.LocalAddr().String(), conn.RemoteAddr().String()
	_ = conn.SetDeadline(deadline)
	// ctx ends the connection's I/O at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })

	if c.sendDelay > 0 {
		t := time.NewTimer(c.sendDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	err = clientDo(c, i, tc, &rec)
	stop()
	if cerr := conn.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	rec.ElapsedMS = elapsedMS(start)
	if c.mode == ClientExpectReset {
		rec.Error = errName(err)
		if rec.Error == "ECONNRESET" {
			return rec, nil
		}
		if err == nil {
			err = errors.New("no error")
		}
		return rec, fmt.Errorf("expected ECONNRESET, got: %w", err)
	}
	rec.Error = errName(err)
	return rec, err
}

// clientDo does the mode's reading and writing; closing is left to runConn.
func clientDo(c *clientConfig, i int, conn *net.TCPConn, rec *Record) error {
	r := &countingReader{r: conn}
	w := &countingWriter{w: conn}
	defer func() { rec.Received, rec.Sent = r.n, w.n }()
	br := bufio.NewReader(r)

	request := func() error {
		req := RequestLine(i)
		if _, err := io.WriteString(w, req); err != nil {
			return fmt.Errorf("write request: %w", err)
		}
		reply, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read reply: %w", eofIsUnexpected(err))
		}
		if reply != ReplyPrefix+req {
			return mismatch(fmt.Sprintf("reply %q, want %q", reply, ReplyPrefix+req))
		}
		return nil
	}

	switch c.mode {
	case ClientRequestClose, ClientRequestReadClose:
		return request()
	case ClientRequestShutdown:
		if err := request(); err != nil {
			return err
		}
		if err := conn.CloseWrite(); err != nil {
			return fmt.Errorf("shutdown(SHUT_WR): %w", err)
		}
		return readToEOF(br)
	case ClientSendClose, ClientSendShutdownRead:
		if _, err := w.Write(Payload(c.bytes)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if c.mode == ClientSendClose {
			return nil
		}
		if err := conn.CloseWrite(); err != nil {
			return fmt.Errorf("shutdown(SHUT_WR): %w", err)
		}
		if err := readToEOF(br); err != nil {
			return err
		}
		if c.expectBytes >= 0 && r.n != c.expectBytes {
			return mismatch(fmt.Sprintf("received %d bytes, want %d", r.n, c.expectBytes))
		}
		return nil
	case ClientExpectReset:
		if _, err := io.WriteString(w, RequestLine(i)); err != nil {
			return fmt.Errorf("write request: %w", err)
		}
		if err := readToEOF(br); err != nil {
			return err
		}
		return io.EOF // the stream ended without a reset
	}
	return fmt.Errorf("unknown mode %q", c.mode)
}
