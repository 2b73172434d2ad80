// Package scenario runs one fault scenario end to end in a lab topology: a real server in
// the server namespace, `finproxy run` on the router's FORWARD path, a real client in the
// client namespace; it collects the event log and the applications' output.
package scenario

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
)

// Spec describes one run.
type Spec struct {
	// Config is the preset or file given to `finproxy run -c`.
	Config string
	// Port is the server's port for this run (overrides the config's).
	Port uint16
	// Server and Client are argv of the applications; "{server_addr}", "{client_addr}",
	// "{port}" and "{finproxy}" (the finproxy executable, for its built-in apps) are replaced. They run inside the server and client namespaces.
	Server []string
	Client []string
	// ServerReady is the text the server prints (stdout or stderr) once it listens
	// (default "ready", as the built-in server prints).
	ServerReady string
	// Finproxy is the finproxy executable (for `finproxy run` in the router namespace).
	Finproxy string
	// Dir receives the event log and the applications' output.
	Dir string
	// Settle is how long the event log must stay quiet after the client and server are done
	// before the run ends (default 800 ms). A retransmission the kernel has scheduled
	// within the next 2 s is waited for as well, however long the RTO (a loaded machine
	// measures long RTTs in the handshake, and the first RTO grows with them).
	Settle time.Duration
	// Timeout bounds the whole run (default 20 s).
	Timeout time.Duration
	Logger  *slog.Logger
	// Addr6 makes {server_addr} and {client_addr} the IPv6 addresses.
	Addr6 bool
	// Observe, when set, follows the connections to the server port in the client and
	// server namespaces for the whole run (tracepoints and sock_diag), and samples the
	// CLOSE_WAIT leak detector with this threshold.
	Observe       bool
	LeakThreshold time.Duration
}

// Result is what one run produced.
type Result struct {
	Records      []rules.Record
	ClientOutput string
	ClientErr    error
	ServerOutput string
	ServerErr    error
	// Summary is what `finproxy run` printed at exit (counters table).
	Summary string
	RunErr  error
	// Kernel is what the TCP counters of the client's and the server's namespace counted
	// from the server's start to the end of the teardown (nil if they could not be read).
	Kernel *KernelReport
	// Observed is what the observer saw (Spec.Observe), Leaks every socket the leak
	// detector reported during the run, ObserveWarnings what did not work.
	Observed        *observe.Report
	Leaks           []observe.Leak
	ObserveWarnings []string
}

func expand(args []string, t *lab.Topology, port uint16, finproxy string, v6 bool) []string {
	server, client := t.ServerAddr, t.ClientAddr
	if v6 {
		server, client = t.ServerAddr6, t.ClientAddr6
	}
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "{finproxy}", finproxy)
		a = strings.ReplaceAll(a, "{server_addr}", server.String())
		a = strings.ReplaceAll(a, "{client_addr}", client.String())
		a = strings.ReplaceAll(a, "{port}", fmt.Sprint(port))
		out[i] = a
	}
	return out
}

// waitLine reads r until a line containing want appears; it keeps draining r afterwards
// into buf so the process never blocks on a full pipe.
func waitLine(ctx context.Context, r io.Reader, want string, buf *syncBuffer) error {
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		once := false
		for sc.Scan() {
			buf.WriteLine(sc.Text())
			if !once && strings.Contains(sc.Text(), want) {
				once = true
				close(found)
			}
		}
		if !once {
			close(found)
		}
	}()
	select {
	case <-found:
		if !strings.Contains(buf.String(), want) {
			return fmt.Errorf("exited before printing %q; output:\n%s", want, buf.String())
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no %q before the deadline; output so far:\n%s", want, buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteLine(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(l)
	s.b.WriteByte('\n')
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Run runs the scenario once in t.
func Run(ctx context.Context, t *lab.Topology, s Spec) (*Result, error) {
	if s.Settle == 0 {
		s.Settle = 800 * time.Millisecond
	}
	if s.Timeout == 0 {
		s.Timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{}
	logPath := filepath.Join(s.Dir, "events.jsonl")

	// 0. The observer, before anything connects.
	if s.Observe {
		obs, err := startObserver(ctx, t, s)
		if err != nil {
			res.ObserveWarnings = append(res.ObserveWarnings, err.Error())
		} else {
			defer func() {
				res.Observed, res.Leaks, res.ObserveWarnings = obs.finish(ctx)
			}()
		}
	}

	// What the kernels count from here on is the run's (each lab has its own namespaces).
	kernelBefore := kernelSnapshot(t)

	// 1. The server, until it says it is ready (a line containing ServerReady on its
	// stdout or stderr).
	sargs := expand(s.Server, t, s.Port, s.Finproxy, s.Addr6)
	srv := t.Command(ctx, "server", sargs[0], sargs[1:]...)
	pr, pw := io.Pipe()
	srv.Stdout, srv.Stderr = pw, pw
	var srvBuf syncBuffer
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start server %v: %w", sargs, err)
	}
	srvDone := make(chan error, 1)
	go func() {
		err := srv.Wait()
		pw.Close()
		srvDone <- err
	}()
	defer func() {
		_ = srv.Process.Kill()
		err := <-srvDone
		srvDone <- err
	}()
	ready := s.ServerReady
	if ready == "" {
		ready = "ready"
	}
	if err := waitLine(ctx, pr, ready, &srvBuf); err != nil {
		return nil, fmt.Errorf("server %v: %w", sargs, err)
	}

	// 2. finproxy on the router, until its hooks are in place.
	fp := t.Command(ctx, "router", s.Finproxy, "run", "-c", s.Config, "--hook", "forward",
		"--port", fmt.Sprint(s.Port), "--log", logPath, "--pcap", filepath.Join(s.Dir, "capture.pcapng"), "--no-observe")
	fp.Cancel = func() error { return fp.Process.Signal(syscall.SIGTERM) }
	fp.WaitDelay = 5 * time.Second
	var fpOut bytes.Buffer
	fp.Stdout = &fpOut
	fpErr, err := fp.StderrPipe()
	if err != nil {
		return nil, err
	}
	var fpErrBuf syncBuffer
	if err := fp.Start(); err != nil {
		return nil, fmt.Errorf("start finproxy: %w", err)
	}
	fpDone := make(chan error, 1)
	stopFinproxy := func() error {
		_ = fp.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-fpDone:
			return err
		case <-time.After(10 * time.Second):
			_ = fp.Process.Kill()
			return errors.Join(errors.New("finproxy did not stop within 10s of SIGTERM"), <-fpDone)
		}
	}
	if err := waitLine(ctx, fpErr, "finproxy: ready", &fpErrBuf); err != nil {
		go func() { fpDone <- fp.Wait() }()
		_ = stopFinproxy()
		return nil, fmt.Errorf("finproxy run: %w", err)
	}
	go func() { fpDone <- fp.Wait() }()

	// 3. The client, to completion.
	cargs := expand(s.Client, t, s.Port, s.Finproxy, s.Addr6)
	cl := t.Command(ctx, "client", cargs[0], cargs[1:]...)
	var clOut bytes.Buffer
	cl.Stdout = &clOut
	cl.Stderr = &clOut
	res.ClientErr = cl.Run()
	res.ClientOutput = clOut.String()

	// 4. The server finishes its connection(s) and exits by itself.
	select {
	case res.ServerErr = <-srvDone:
		srvDone <- res.ServerErr // for the deferred wait
	case <-time.After(s.Timeout / 2):
		res.ServerErr = errors.New("server did not exit")
	}
	res.ServerOutput = srvBuf.String()

	// 5. The teardown goes on in the kernels (retransmissions, TIME_WAIT ACKs): wait until
	// the event log has been quiet for Settle and no retransmission is about to happen.
	settle(ctx, t, s, logPath, s.Settle)
	res.Kernel = kernelDelta(kernelBefore, kernelSnapshot(t))

	res.RunErr = stopFinproxy()
	res.Summary = fpOut.String()
	if res.RunErr != nil {
		res.Summary += fpErrBuf.String()
	}
	recs, err := ReadLog(logPath)
	if err != nil {
		return res, err
	}
	res.Records = recs
	return res, nil
}

// waitQuiet returns once the file at path has not grown for quiet, or ctx ends.
func waitQuiet(ctx context.Context, path string, quiet time.Duration) {
	var last int64 = -1
	lastChange := time.Now()
	tick := time.NewTicker(quiet / 8)
	defer tick.Stop()
	for {
		// The log is buffered by finproxy; a quiet size still means no new segments for a
		// while only when combined with the time since the last change.
		if fi, err := os.Stat(path); err == nil && fi.Size() != last {
			last = fi.Size()
			lastChange = time.Now()
		}
		if time.Since(lastChange) >= quiet {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ReadLog reads an event log written by `finproxy run --log`.
func ReadLog(path string) ([]rules.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []rules.Record
	dec := json.NewDecoder(f)
	for {
		var r rules.Record
		if err := dec.Decode(&r); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, fmt.Errorf("event log %s: %w", path, err)
		}
		out = append(out, r)
	}
}
