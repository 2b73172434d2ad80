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

	"github.com/finproxy/finproxy/config"
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
	// StopGrace is how long an application the lab stops has between SIGTERM and
	// SIGKILL to its process group (default config.DefaultStopGrace).
	StopGrace time.Duration
	// Procs, when set, registers every process group the run starts (what a second
	// interrupt kills at once).
	Procs *Procs
	// Hang, when set, bounds the client's run (it is stopped after Hang) and the wait for
	// the run's connections to be over once it ended (instead of half the timeout).
	Hang time.Duration
	// shared is the server started once for every run of a lab (server_lifetime "lab").
	shared *proc
}

// Result is what one run produced.
type Result struct {
	Records      []rules.Record
	ClientOutput string
	ClientErr    error
	ServerOutput string
	ServerErr    error
	// ClientStop and ServerStop say how the lab stopped an application that had not
	// exited by itself (nil when it had). ServerRunning: the server runs on for the
	// lab's next runs (server_lifetime "lab"), it has no exit status in this run.
	ClientStop, ServerStop *Stop
	ServerRunning          bool
	// HeldSockets are the sockets the server's processes hold that the kernel closed (a
	// reset, a timeout) and no application closed, new since the client started.
	HeldSockets []HeldSocket
	// Leftovers are the processes found in the client's or the server's namespace after
	// their process groups were stopped (a daemon that detached), which the lab ended.
	Leftovers []string
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
//
// The applications run in process groups of their own. The run is over when the client
// has exited and every connection of the run is over (CLOSE or TIME_WAIT, no
// retransmission due: see settle), or when the server exited by itself; a server still
// running then is stopped by the lab (SIGTERM to its group, SIGKILL after StopGrace), unless it is
// Spec.shared (started once for all runs of a lab).
func Run(ctx context.Context, t *lab.Topology, s Spec) (*Result, error) {
	if s.Settle == 0 {
		s.Settle = 800 * time.Millisecond
	}
	if s.Timeout == 0 {
		s.Timeout = 20 * time.Second
	}
	if s.StopGrace == 0 {
		s.StopGrace = config.DefaultStopGrace
	}
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	// An interrupt leaves each application at most a second to end (the lab must be gone
	// within 5 s of SIGINT or SIGTERM); the run's own timeout gives it the full grace.
	grace := func() time.Duration {
		if outer.Err() != nil {
			return min(s.StopGrace, time.Second)
		}
		return s.StopGrace
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{}
	logPath := filepath.Join(s.Dir, "events.jsonl")
	s.Logger = orDefault(s.Logger)

	// 0. The observer, before anything connects.
	var obs *observer
	if s.Observe {
		var err error
		if obs, err = startObserver(ctx, t, s); err != nil {
			res.ObserveWarnings = append(res.ObserveWarnings, err.Error())
			obs = nil
		}
	}
	finishObserver := func() {
		if obs != nil {
			res.Observed, res.Leaks, res.ObserveWarnings = obs.finish(ctx)
			obs = nil
		}
	}
	defer finishObserver()

	// What the kernels count from here on is the run's (each lab has its own namespaces).
	kernelBefore := kernelSnapshot(t)

	phase := func(name string) { s.Logger.Debug("lab phase", "phase", name, "dir", s.Dir) }
	// 1. The server, until it says it is ready (a line containing ServerReady on its
	// stdout or stderr), unless one runs for the whole lab.
	srv := s.shared
	if srv != nil {
		if !srv.alive() {
			return nil, fmt.Errorf("the server started for the whole lab has exited (%s); output:\n%s", statusText(srv.Err()), srv.Output())
		}
	} else {
		phase("server")
		var err error
		if srv, err = StartServer(ctx, t, s); err != nil {
			return nil, err
		}
		defer func() { srv.Stop(grace()) }() // on the error paths; a no-op once it is over
	}

	// 2. finproxy on the router, until its hooks are in place.
	phase("finproxy")
	fp := t.Command(context.Background(), "router", s.Finproxy, "run", "-c", s.Config, "--hook", "forward",
		"--port", fmt.Sprint(s.Port), "--log", logPath, "--pcap", filepath.Join(s.Dir, "capture.pcapng"), "--no-observe")
	fp.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fp.WaitDelay = time.Second
	var fpOut bytes.Buffer
	fp.Stdout = &fpOut
	fpErr, err := fp.StderrPipe()
	if err != nil {
		return nil, err
	}
	var fpErrBuf syncBuffer
	if err := s.Procs.start(fp, func() { killGroup(fp.Process, syscall.SIGKILL) }); err != nil {
		return nil, fmt.Errorf("start finproxy: %w", err)
	}
	fpDone := make(chan error, 1)
	stopped := false
	stopFinproxy := func() error {
		if stopped {
			return nil
		}
		stopped = true
		defer s.Procs.remove(fp.Process.Pid)
		_ = fp.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-fpDone:
			return err
		case <-time.After(10 * time.Second):
			killGroup(fp.Process, syscall.SIGKILL)
			return errors.Join(errors.New("finproxy did not stop within 10s of SIGTERM"), <-fpDone)
		}
	}
	if err := waitLine(ctx, fpErr, "finproxy: ready", &fpErrBuf); err != nil {
		go func() { fpDone <- fp.Wait() }()
		_ = stopFinproxy()
		return nil, fmt.Errorf("finproxy run: %w", err)
	}
	go func() { fpDone <- fp.Wait() }()
	defer stopFinproxy() //nolint:errcheck // on the error paths

	// 3. The client, to completion (stopped as a group when the run's time is up, or
	// after Hang).
	heldBefore := heldSockets(t)
	cargs := expand(s.Client, t, s.Port, s.Finproxy, s.Addr6)
	phase("client")
	cl, err := startProc(t, s.Procs, "client", "client", cargs, "")
	if err != nil {
		return nil, err
	}
	var hang <-chan time.Time
	if s.Hang > 0 {
		hang = time.After(s.Hang)
	}
	select {
	case <-cl.exited:
	case <-ctx.Done():
	case <-hang:
	}
	cl.Stop(grace())
	res.ClientErr, res.ClientStop = cl.Err(), cl.Stopped()
	res.ClientOutput = cl.Output()

	// 4. The scenario is over when the server exits by itself (a built-in one, after its
	// connections) or when every connection of the run is over; a server that does
	// neither has half the run's time.
	phase("over")
	diags := openDiags(t, runFilter(t, s))
	defer closeDiags(diags)
	overWait := s.Timeout / 2
	if s.Hang > 0 {
		overWait = s.Hang
	}
	overCtx, overCancel := context.WithTimeout(ctx, overWait)
	waitOver(overCtx, srv, diags, s.shared != nil)
	overCancel()

	// 5. The teardown goes on in the kernels (retransmissions, TIME_WAIT ACKs): wait until
	// the event log has been quiet for Settle and no retransmission is about to happen.
	phase("settle")
	settle(ctx, diags, logPath, s.Settle)
	res.Kernel = kernelDelta(kernelBefore, kernelSnapshot(t))
	res.HeldSockets = newHeldSockets(heldBefore, heldSockets(t))

	phase("stop")
	res.RunErr = stopFinproxy()
	res.Summary = fpOut.String()
	if res.RunErr != nil {
		res.Summary += fpErrBuf.String()
	}
	// What the observer saw is the run's: stopping a server that still holds connections
	// (a CLOSE_WAIT leak) would add a teardown the scenario did not make.
	finishObserver()

	// 6. A server of this run that is still running is stopped, and whatever the
	// applications left in their namespaces (outside their process groups) too.
	if s.shared == nil {
		srv.Stop(grace())
		res.ServerErr, res.ServerStop = srv.Err(), srv.Stopped()
		res.ServerOutput = srv.Output()
		res.Leftovers = sweep(t, grace(), lab.RoleClient, lab.RoleServer)
	} else {
		res.ServerRunning = true
		res.ServerOutput = srv.takeOutput() // the first run's has the start
		res.Leftovers = sweep(t, grace(), lab.RoleClient)
	}
	recs, err := ReadLog(logPath)
	if err != nil {
		return res, err
	}
	res.Records = recs
	return res, nil
}

// StartServer starts the spec's server in t's server namespace and waits until it prints
// its ready text. The caller stops it (Stop) when it is done with it.
func StartServer(ctx context.Context, t *lab.Topology, s Spec) (*proc, error) {
	ready := s.ServerReady
	if ready == "" {
		ready = "ready"
	}
	if s.StopGrace == 0 {
		s.StopGrace = config.DefaultStopGrace
	}
	sargs := expand(s.Server, t, s.Port, s.Finproxy, s.Addr6)
	srv, err := startProc(t, s.Procs, "server", "server", sargs, ready)
	if err != nil {
		return nil, err
	}
	if err := srv.waitReady(ctx.Done()); err != nil {
		grace := s.StopGrace
		if ctx.Err() != nil {
			// Interrupted, or out of time: a second is enough for what never got ready.
			grace = min(grace, time.Second)
		}
		srv.Stop(grace)
		return nil, fmt.Errorf("server %q: %w", sargs, err)
	}
	return srv, nil
}

// waitOver returns when srv has exited by itself (unless shared), when every socket of
// the run in diags is over, or when ctx ends.
func waitOver(ctx context.Context, srv *proc, diags []*observe.Diag, shared bool) {
	exited := srv.exited
	if shared {
		exited = nil
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if connectionsOver(diags) {
			return
		}
		select {
		case <-exited:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// connectionsOver reports whether no socket in diags is still in the middle of a
// connection: every one is a listener, in TIME_WAIT or closed, and none has a
// retransmission pending. Without a source it says no (the run then waits for the
// server or its time).
func connectionsOver(diags []*observe.Diag) bool {
	if len(diags) == 0 {
		return false
	}
	for _, d := range diags {
		socks, err := d.Dump()
		if err != nil {
			return false
		}
		for _, so := range socks {
			switch so.State {
			case observe.Listen, observe.TimeWait, observe.Close:
			default:
				return false
			}
		}
	}
	return true
}

func orDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
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
