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
	"sync"
	"time"
)

// Server modes. Each names what the server does with every connection it accepts.
const (
	// ServerEchoClose reads until EOF (the client half-closed or closed), then closes:
	// the server is the passive closer (CLOSE_WAIT -> LAST_ACK). It writes nothing back,
	// since a client that has fully closed would answer data with RST.
	ServerEchoClose = "echo-close"
	// ServerReplyClose reads one line, writes the reply line, then closes at once: the
	// server closes first.
	ServerReplyClose = "reply-close"
	// ServerReplyWaitClose reads one line, writes the reply line, then closes only after
	// reading EOF: the baseline four-way close with the client closing first.
	ServerReplyWaitClose = "reply-wait-close"
	// ServerLeak reads until EOF and never closes: the socket stays in CLOSE_WAIT until
	// the program ends (see --hold).
	ServerLeak = "leak"
	// ServerHalfClose reads until EOF, then sends --lines lines, --interval apart, from
	// CLOSE_WAIT, then closes.
	ServerHalfClose = "half-close"
	// ServerSimultaneous reads one line, writes the reply line, then closes (as
	// reply-close); paired with client mode request-read-close, both FINs cross when
	// finproxy holds them.
	ServerSimultaneous = "simultaneous"
	// ServerSink reads until EOF counting bytes (the record's "received"), then closes.
	ServerSink = "sink"
)

var serverModes = []string{ServerEchoClose, ServerReplyClose, ServerReplyWaitClose, ServerLeak, ServerHalfClose, ServerSimultaneous, ServerSink}

// ReplyPrefix starts the server's reply line: the reply to the line L is ReplyPrefix + L.
const ReplyPrefix = "reply: "

// HalfCloseLine is the j-th line (from 0) sent by mode half-close; 10 bytes each for j < 10000.
func HalfCloseLine(j int) string { return fmt.Sprintf("line %04d\n", j) }

type serverConfig struct {
	listen     string
	mode       string
	count      int
	lines      int
	interval   time.Duration
	closeDelay time.Duration
	hold       time.Duration
	timeout    time.Duration
}

func serverFlags(stderr io.Writer) (*flag.FlagSet, *serverConfig) {
	c := &serverConfig{}
	fs := flag.NewFlagSet("app server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "", "`ADDR:PORT` to listen on (port 0: any; the address is logged on stderr)")
	fs.StringVar(&c.mode, "mode", "", "`MODE`: "+strings.Join(serverModes, ", "))
	fs.IntVar(&c.count, "count", 1, "serve `N` connections, then exit (0: serve until stopped)")
	fs.IntVar(&c.lines, "lines", 3, "half-close: lines to send after the client's FIN")
	fs.DurationVar(&c.interval, "interval", 20*time.Millisecond, "half-close: pause between lines")
	fs.DurationVar(&c.closeDelay, "close-delay", 0, "wait this long before close() (e.g. 300ms > the 200ms delayed-ACK maximum, for four separate closing segments)")
	fs.DurationVar(&c.hold, "hold", 0, "leak: after --count connections reached EOF, keep their sockets this long, then exit (0: until stopped)")
	fs.DurationVar(&c.timeout, "timeout", 0, "per-connection I/O deadline (0: none)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `usage: app server --listen ADDR:PORT --mode MODE [flags]
Serves TCP connections, printing "ready" on stdout once listening and one JSON record per
connection. Modes:
  echo-close        read until EOF, then close (server closes second)
  reply-close       read a line, reply, close at once (server closes first)
  reply-wait-close  read a line, reply, read until EOF, then close
  leak              read until EOF, never close (CLOSE_WAIT leak)
  half-close        read until EOF, send --lines lines --interval apart, then close
  simultaneous      read a line, reply, close (pair with client request-read-close)
  sink              read until EOF counting bytes, then close
Flags:
`)
		fs.PrintDefaults()
	}
	return fs, c
}

func serverMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, c := serverFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "app server: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	case c.listen == "":
		fmt.Fprintln(stderr, "app server: --listen is required")
		return ExitUsage
	case !slices.Contains(serverModes, c.mode):
		fmt.Fprintf(stderr, "app server: --mode %q: want one of %s\n", c.mode, strings.Join(serverModes, ", "))
		return ExitUsage
	case c.count < 0 || c.lines < 0 || c.interval < 0 || c.closeDelay < 0 || c.hold < 0 || c.timeout < 0:
		fmt.Fprintln(stderr, "app server: negative --count, --lines or duration")
		return ExitUsage
	}
	return runServer(ctx, c, stdout, stderr)
}

type server struct {
	c      *serverConfig
	out    *output
	stderr *output

	mu     sync.Mutex
	conns  map[int]net.Conn // open connections, closed at exit
	failed int
	done   int
	doneCh chan struct{} // closed when count connections are done
}

func runServer(ctx context.Context, c *serverConfig, stdout, stderr io.Writer) int {
	lc := net.ListenConfig{KeepAlive: -1} // no keepalive probes on the wire
	ln, err := lc.Listen(ctx, "tcp", c.listen)
	if err != nil {
		fmt.Fprintf(stderr, "app server: %v\n", err)
		return ExitFail
	}
	s := &server{
		c:      c,
		out:    &output{w: stdout},
		stderr: &output{w: stderr},
		conns:  map[int]net.Conn{},
		doneCh: make(chan struct{}),
	}
	s.stderr.line("app server: listening on " + ln.Addr().String() + ", mode " + c.mode)
	s.out.line("ready")

	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	var wg sync.WaitGroup
	for i := 0; c.count == 0 || i < c.count; i++ {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.stderr.line(fmt.Sprintf("app server: accept: %v", err))
				s.mu.Lock()
				s.failed++
				s.mu.Unlock()
			}
			break
		}
		s.mu.Lock()
		s.conns[i] = conn
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(i, conn)
		}()
	}
	// No further connections: SYNs from now on are refused.
	ln.Close()

	complete := false
	if c.count > 0 {
		select {
		case <-s.doneCh:
			complete = true
		case <-ctx.Done():
		}
	}
	if complete && c.mode == ServerLeak {
		// Keep the leaked sockets in CLOSE_WAIT.
		if c.hold > 0 {
			t := time.NewTimer(c.hold)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		} else {
			<-ctx.Done()
		}
	}
	// Exiting: close whatever is still open (leaked sockets, connections cut short by ctx).
	s.mu.Lock()
	for _, conn := range s.conns {
		conn.Close()
	}
	s.mu.Unlock()
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed > 0 {
		return ExitFail
	}
	if c.count > 0 && s.done < c.count {
		s.stderr.line(fmt.Sprintf("app server: stopped after %d of %d connections", s.done, c.count))
		return ExitFail
	}
	return ExitOK
}

// handle serves one connection and prints its record.
func (s *server) handle(i int, conn net.Conn) {
	start := time.Now()
	rec := Record{Conn: i, Local: conn.LocalAddr().String(), Remote: conn.RemoteAddr().String()}
	if s.c.timeout > 0 {
		_ = conn.SetDeadline(start.Add(s.c.timeout))
	}
	err := s.serve(conn, &rec)
	leaked := err == nil && s.c.mode == ServerLeak
	if !leaked {
		if cerr := s.closeConn(i, conn); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}
	rec.Error = errName(err)
	rec.ElapsedMS = elapsedMS(start)
	s.out.record(rec)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed++
		s.stderr.line(fmt.Sprintf("app server: conn %d (%s): %v", i, rec.Remote, err))
	}
	s.done++
	if s.done == s.c.count {
		close(s.doneCh)
	}
}

func (s *server) closeConn(i int, conn net.Conn) error {
	if s.c.closeDelay > 0 {
		time.Sleep(s.c.closeDelay)
	}
	s.mu.Lock()
	delete(s.conns, i)
	s.mu.Unlock()
	return conn.Close()
}

// serve does the mode's reading and writing; closing is left to handle.
func (s *server) serve(conn net.Conn, rec *Record) error {
	r := &countingReader{r: conn}
	defer func() { rec.Received = r.n }()
	w := &countingWriter{w: conn}
	defer func() { rec.Sent = w.n }()
	br := bufio.NewReader(r)

	switch s.c.mode {
	case ServerEchoClose, ServerSink, ServerLeak:
		return readToEOF(br)
	case ServerReplyClose, ServerSimultaneous, ServerReplyWaitClose:
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read request line: %w", eofIsUnexpected(err))
		}
		if _, err := io.WriteString(w, ReplyPrefix+line); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
		if s.c.mode == ServerReplyWaitClose {
			return readToEOF(br)
		}
		return nil
	case ServerHalfClose:
		if err := readToEOF(br); err != nil {
			return err
		}
		for j := 0; j < s.c.lines; j++ {
			if j > 0 && s.c.interval > 0 {
				time.Sleep(s.c.interval)
			}
			if _, err := io.WriteString(w, HalfCloseLine(j)); err != nil {
				return fmt.Errorf("write line %d after the client's FIN: %w", j, err)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", s.c.mode)
}

// readToEOF reads and discards until EOF; EOF is success.
func readToEOF(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read until EOF: %w", err)
	}
	return nil
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
