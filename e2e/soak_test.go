package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
	"github.com/finproxy/finproxy/lab"
)

// The soak: `finproxy run` with observation on, on a router between a client making 200
// connections a second and a server, with 30% of the FINs dropped, for FINPROXY_SOAK
// (50s by default, what CI affords; scripts/soak runs a long one). It prints finproxy's
// resident memory (VmRSS) over time and fails when, after the warm-up, it leaves ±10% of
// its level at the end of the warm-up, when stopping takes a second or more, or when the
// report grows past a bound that does not depend on the run's length.
//
// Knobs (environment):
//
//	FINPROXY_SOAK=30m            the run's length (the warm-up is included)
//	FINPROXY_SOAK_WARMUP=5m      the warm-up (default: half the run, at most 5m). The
//	                             observer's bound is reached within 15s at 200/s; the
//	                             engine forgets a finished connection after 75s, so its
//	                             table grows for that long (a few MB: within the ±10%)
//	FINPROXY_SOAK_RATE=200       connections per second
//	FINPROXY_SOAK_TW_BUCKETS=N   net.ipv4.tcp_max_tw_buckets in the client's namespace
//	                             (default 1000, so that the live TIME_WAIT sockets, each
//	                             a live connection the observer follows and reports,
//	                             reach their number within the warm-up; empty: the
//	                             kernel's default, 60s of TIME_WAIT at 200/s being 12000
//	                             sockets, reached after a minute)
//	FINPROXY_SOAK_EVERY=5s       the RSS sampling period (default: a 20th of the run, 1s to 30s)
type soakParams struct {
	duration, warmup, every time.Duration
	rate                    int
	twBuckets               string // "" keeps the kernel's default
}

func soakParamsFromEnv(t *testing.T) soakParams {
	t.Helper()
	p := soakParams{duration: 50 * time.Second, rate: 200}
	dur := func(name string, d *time.Duration) {
		if v := os.Getenv(name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				t.Fatalf("%s=%q: want a positive duration such as 30m", name, v)
			}
			*d = x
		}
	}
	dur("FINPROXY_SOAK", &p.duration)
	p.warmup = min(p.duration/2, 5*time.Minute)
	dur("FINPROXY_SOAK_WARMUP", &p.warmup)
	p.every = min(max(p.duration/20, time.Second), 30*time.Second)
	dur("FINPROXY_SOAK_EVERY", &p.every)
	if v := os.Getenv("FINPROXY_SOAK_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 5000 {
			t.Fatalf("FINPROXY_SOAK_RATE=%q: want connections per second, 1 to 5000", v)
		}
		p.rate = n
	}
	p.twBuckets = "1000"
	if v, ok := os.LookupEnv("FINPROXY_SOAK_TW_BUCKETS"); ok {
		if _, err := strconv.Atoi(v); v != "" && err != nil {
			t.Fatalf("FINPROXY_SOAK_TW_BUCKETS=%q: want a number (empty: the kernel's default)", v)
		}
		p.twBuckets = v
	}
	if p.warmup >= p.duration-2*p.every {
		t.Fatalf("the warm-up (%v) leaves less than two samples of the run (%v, every %v)", p.warmup, p.duration, p.every)
	}
	return p
}

const soakPort = 18190

// soakDialers is the number of threads making the connections.
const soakDialers = 4

// maxSoakReport bounds the report of a soak whatever its length and its TIME_WAIT
// sockets: it details the connections whose applications still hold a socket and the
// latest observe.DefaultMaxConnections of the others (closed, or waiting out TIME_WAIT),
// and counts the rest in a summary. About 5.5 KB a connection.
const maxSoakReport = 32 << 20

func TestSoakFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes a minute")
	}
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "iptables")
	p := soakParamsFromEnv(t)
	t.Logf("soak: %v at %d connections/s, warm-up %v, RSS every %v, client tcp_max_tw_buckets %q",
		p.duration, p.rate, p.warmup, p.every, p.twBuckets)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := lab.Options{Prefix: "fptest"}
	if p.twBuckets != "" {
		opts.Sysctls = map[string]map[string]string{lab.RoleClient: {"net.ipv4.tcp_max_tw_buckets": p.twBuckets}}
	}
	topo, err := lab.New(ctx, opts)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("remove lab: %v", err)
		}
	})

	srv := startSoakServer(t, topo)
	dir := t.TempDir()
	cfg := writeConfig(t, "soak", fmt.Sprintf(`name = "soak-drop-fins"
description = "drops 30%% of the FINs, either side"
seed = 7
[target]
port = %d
address = ["%s"]
hook = "forward"
[[rule]]
name = "drop-fins"
has_flags = "FIN"
probability = 0.3
action = "drop"
`, soakPort, topo.ServerAddr))
	report := filepath.Join(dir, "report.json")
	fp := startSoakRun(t, topo, "run", "-c", cfg, "--observe-netns", topo.Client+","+topo.Server, "--report", report)

	// The churn: connect, send a byte, close (the client closes first), p.rate a second,
	// from soakDialers threads in the client's namespace taking the ticks (a tick no
	// dialer is free for is lost: the rate check below says so).
	var made, failed atomic.Int64
	stopChurn := make(chan struct{})
	tick := time.NewTicker(time.Second / time.Duration(p.rate))
	var churn sync.WaitGroup
	churnErrs := make(chan error, soakDialers)
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopChurn); churn.Wait(); tick.Stop() }) }
	defer stop() // also on a fatal error: the lab's Close waits for the dialers' Do
	for range soakDialers {
		churn.Go(func() {
			churnErrs <- topo.Do(lab.RoleClient, func() error {
				addr := netip4(topo, soakPort)
				d := net.Dialer{Timeout: 2 * time.Second}
				for {
					select {
					case <-stopChurn:
						return nil
					case <-tick.C:
					}
					c, err := d.Dial("tcp", addr)
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = c.Write([]byte{'x'})
					_ = c.Close()
					made.Add(1)
				}
			})
		})
	}

	start := time.Now()
	var samples []soakSample
	every := time.NewTicker(p.every)
	for time.Since(start) < p.duration {
		<-every.C
		m, err := readRSS(fp.cmd.Process.Pid)
		if err != nil {
			every.Stop()
			t.Fatalf("finproxy's memory: %v (did it die?)\n%s", err, fp.output())
		}
		s := soakSample{at: time.Since(start), rss: m, conns: made.Load()}
		samples = append(samples, s)
		warm := ""
		if s.at < p.warmup {
			warm = "  (warm-up)"
		}
		t.Logf("soak %8v  RSS %6.1f MB  connections %7d (%d failed)%s", s.at.Round(time.Second), float64(m)/(1<<20), s.conns, failed.Load(), warm)
	}
	every.Stop()
	stop()
	for range soakDialers {
		if err := <-churnErrs; err != nil {
			t.Fatalf("churn: %v", err)
		}
	}
	elapsed := time.Since(start)
	n := made.Load()
	t.Logf("soak: %d connections in %v (%.0f/s), %d failed, %d served", n, elapsed.Round(time.Second), float64(n)/elapsed.Seconds(), failed.Load(), srv.served.Load())

	stopAt := time.Now()
	_ = fp.cmd.Process.Signal(syscall.SIGTERM)
	werr := fp.wait(30 * time.Second)
	stopTook := time.Since(stopAt)
	t.Logf("soak: finproxy stopped %v after SIGTERM (exit: %v)", stopTook.Round(time.Millisecond), werr)
	summary := fp.stdout()
	t.Logf("finproxy's summary (head):\n%s", head(summary, 12))

	// What a user checks: memory flat after the warm-up, a prompt stop, a report of
	// bounded size that still accounts for every connection.
	if werr != nil {
		t.Errorf("finproxy run exited with %v:\n%s", werr, fp.output())
	}
	if float64(n) < 0.75*float64(p.rate)*elapsed.Seconds() {
		t.Errorf("only %d connections in %v: the machine could not hold %d/s, this soak proves little", n, elapsed.Round(time.Second), p.rate)
	}
	// Flat: every sample after the warm-up within ±10% of their median (the median, not
	// one sample, as the level: the garbage collector's cycles make RSS wobble by a few
	// percent from one sample to the next).
	var after []uint64
	for _, s := range samples {
		if s.at >= p.warmup {
			after = append(after, s.rss)
		}
	}
	if len(after) < 2 {
		t.Fatalf("%d samples after the warm-up: the flatness check would prove nothing", len(after))
	}
	level := slices.Sorted(slices.Values(after))[len(after)/2]
	t.Logf("soak: RSS after the warm-up: median %.1f MB, %.1f to %.1f MB over %d samples", mb(level), mb(slices.Min(after)), mb(slices.Max(after)), len(after))
	for _, s := range samples {
		if s.at < p.warmup {
			continue
		}
		if d := float64(s.rss)/float64(level) - 1; d > 0.10 || d < -0.10 {
			t.Errorf("RSS %.1f MB at %v: %+.0f%% from the median after the warm-up (%.1f MB): not flat within ±10%%",
				mb(s.rss), s.at.Round(time.Second), 100*d, mb(level))
		}
	}
	if stopTook >= time.Second {
		t.Errorf("finproxy took %v to stop after SIGTERM, want under a second", stopTook.Round(time.Millisecond))
	}
	st, err := os.Stat(report)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	t.Logf("soak: report %.1f MB", float64(st.Size())/(1<<20))
	if st.Size() > maxSoakReport {
		t.Errorf("report of %.1f MB, want at most %d MB whatever the run's length", float64(st.Size())/(1<<20), maxSoakReport>>20)
	}
	checkSoakReport(t, report, n)
}

// checkSoakReport checks that the report accounts for the connections: those in detail
// and those only counted in the summary add up to about what the client made.
func checkSoakReport(t *testing.T, path string, made int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rep struct {
		Observation *struct {
			Stats struct {
				Evicted uint64 `json:"evicted"`
			} `json:"stats"`
			Summary *struct {
				Connections uint64 `json:"connections"`
			} `json:"summary"`
		} `json:"observation"`
		Connections []json.RawMessage `json:"connections"`
	}
	if err := json.NewDecoder(bufio.NewReader(f)).Decode(&rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	if rep.Observation == nil {
		t.Fatalf("report without observation")
	}
	var summarised uint64
	if s := rep.Observation.Summary; s != nil {
		summarised = s.Connections
	}
	total := uint64(len(rep.Connections)) + summarised
	t.Logf("soak: report: %d connections in detail, %d summarised (evicted %d)", len(rep.Connections), summarised, rep.Observation.Stats.Evicted)
	if float64(total) < 0.95*float64(made) {
		t.Errorf("the report accounts for %d connections (%d in detail, %d summarised), the client made %d", total, len(rep.Connections), summarised, made)
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

type soakSample struct {
	at    time.Duration
	rss   uint64
	conns int64
}

func netip4(topo *lab.Topology, port int) string {
	return net.JoinHostPort(topo.ServerAddr.String(), strconv.Itoa(port))
}

// soakServer accepts connections in the server's namespace, reads until EOF and closes.
type soakServer struct {
	ln     net.Listener
	served atomic.Int64
	wg     sync.WaitGroup
}

func startSoakServer(t *testing.T, topo *lab.Topology) *soakServer {
	t.Helper()
	s := &soakServer{}
	err := topo.Do(lab.RoleServer, func() error {
		var err error
		s.ln, err = net.Listen("tcp", netip4(topo, soakPort))
		return err
	})
	if err != nil {
		t.Fatalf("soak server: %v", err)
	}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
				s.served.Add(1)
			})
		}
	})
	t.Cleanup(func() { _ = s.ln.Close(); s.wg.Wait() })
	return s
}

// soakProc is `finproxy run` in the router's namespace, its output kept.
type soakProc struct {
	cmd      *exec.Cmd
	mu       sync.Mutex
	out, err strings.Builder
	done     chan error
}

func startSoakRun(t *testing.T, topo *lab.Topology, args ...string) *soakProc {
	t.Helper()
	p := &soakProc{done: make(chan error, 1)}
	p.cmd = topo.Command(context.Background(), lab.RoleRouter, finproxyBin, append(args, "--hook", "forward")...)
	p.cmd.Stdout = soakWriter{&p.mu, &p.out}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.err.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), "finproxy: ready") {
				once.Do(func() { close(ready) })
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.wait(10 * time.Second)
	})
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatalf("finproxy run: not ready after 15s:\n%s", p.output())
	}
	return p
}

// wait waits for the process's end (for at most d) and returns its Wait error.
func (p *soakProc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err // later calls see it too
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

func (p *soakProc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *soakProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String() + p.err.String()
}

type soakWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l soakWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func head(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// readRSS reads a process's VmRSS in bytes.
func readRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
