package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/lab"
	"github.com/finproxy/finproxy/nfq"
)

const (
	labPrefix = "fpbench" // namespaces fpbench-<id>-client|router|server
	benchPort = 5201
	benchQ    = 7451 // NFQUEUE number of the finproxy variant (in the router namespace)
	toxiAPI   = 8474
)

type options struct {
	reps       int
	duration   time.Duration
	jsonPath   string
	smoke      bool
	toxiproxy  string
	holdConns  int
	simConns   int
	delayConns int
	delay      time.Duration
	variants   []string
	parts      map[string]bool
	profileDir string
	queues     int
	nice       int
}

// bench is one benchmark run.
type bench struct {
	ctx    context.Context
	o      options
	self   string
	topo   *lab.Topology
	tmp    string
	server *proc
	procs  []*proc

	serverAddr, routerAddr string // host:port of the server, and of Toxiproxy's listener
	sources                string // the client's extra addresses, for the churn
	passCfg, delayCfg      string
	teardownCfg            string
	toxiOK                 bool
	toxiWhy                string
	nprof                  int
	log                    func(format string, args ...any)
}

func parseOptions(args []string) (options, error) {
	fs := flag.NewFlagSet("fpbench", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.reps, "reps", 5, "repetitions of each variant (medians are reported)")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "duration of each workload run")
	fs.StringVar(&o.jsonPath, "json", "", "write every number to this file (JSON)")
	fs.BoolVar(&o.smoke, "smoke", false, "tiny durations and counts: checks that the benchmark works, not its numbers")
	fs.StringVar(&o.toxiproxy, "toxiproxy", "", "Toxiproxy server binary (default: toxiproxy/server next to this program)")
	fs.IntVar(&o.holdConns, "hold-conns", 10000, "concurrent connections for the memory measurement")
	fs.IntVar(&o.simConns, "sim-conns", 2000000, "connections driven through the engine in-process for the memory-growth measurement")
	fs.IntVar(&o.delayConns, "delay-conns", 400, "connections whose SYN is delayed for the delay accuracy")
	fs.DurationVar(&o.delay, "delay", 10*time.Millisecond, "the delay of the delay accuracy measurement")
	variants := fs.String("variants", strings.Join(allVariants, ","),
		"variants to compare: direct; toxiproxy; finproxy-teardown (the rules of a teardown preset, which queue no handshake: they match every connection's FINs and the ACKs of them and pass them) and finproxy-handshake (a rule on the SYN and SYN|ACK that passes them), with observation on as finproxy run does by default, and their -noobs twins (--no-observe)")
	parts := fs.String("parts", "compare,delay,hold,sim", "what to measure: compare (the variants), delay, hold (memory with open connections), sim (engine memory over many connections)")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of each finproxy run into this directory")
	fs.IntVar(&o.nice, "nice", runner.DefaultNice, "nice value of the finproxy variants' threads (finproxy run's --nice)")
	fs.IntVar(&o.queues, "queues", 1, "NFQUEUE queues of the finproxy variants (--queue-balance; `finproxy run` uses one)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.profileDir != "" {
		// Absolute: the finproxy runs write there from their own working directory.
		dir, err := filepath.Abs(o.profileDir)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			return o, fmt.Errorf("--profile %s: %w", o.profileDir, err)
		}
		o.profileDir = dir
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.smoke {
		def := func(name string, f func()) {
			if !set[name] {
				f()
			}
		}
		def("reps", func() { o.reps = 1 })
		def("duration", func() { o.duration = 300 * time.Millisecond })
		def("hold-conns", func() { o.holdConns = 200 })
		def("sim-conns", func() { o.simConns = 20000 })
		def("delay-conns", func() { o.delayConns = 24 })
	}
	o.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		switch p = strings.TrimSpace(p); p {
		case "compare", "delay", "hold", "sim":
			o.parts[p] = true
		case "":
		default:
			return o, fmt.Errorf("--parts: unknown part %q", p)
		}
	}
	for _, v := range strings.Split(*variants, ",") {
		switch v = strings.TrimSpace(v); v {
		case "direct", "toxiproxy", "finproxy-teardown", "finproxy-handshake", "finproxy-teardown-noobs", "finproxy-handshake-noobs":
			o.variants = append(o.variants, v)
		case "":
		default:
			return o, fmt.Errorf("--variants: unknown variant %q", v)
		}
	}
	if o.reps < 1 || o.duration <= 0 {
		return o, errors.New("--reps and --duration must be positive")
	}
	return o, nil
}

func orchestrate(args []string) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root (network namespaces, iptables, NFQUEUE): sudo scripts/bench")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.toxiproxy == "" {
		o.toxiproxy = filepath.Join(filepath.Dir(self), "toxiproxy", "server")
	}
	ctx, stop := signalContext()
	defer stop()

	rep := &report{Meta: machine(), Params: params{Reps: o.reps, Duration: o.duration.String(), Smoke: o.smoke,
		HoldConns: o.holdConns, SimConns: o.simConns, DelayConns: o.delayConns, Delay: o.delay.String(), Variants: o.variants,
		Queues: o.queues, Nice: o.nice}}
	started := time.Now()
	b := &bench{ctx: ctx, o: o, self: self, log: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "fpbench %5.1fs: %s\n", time.Since(started).Seconds(), fmt.Sprintf(f, a...))
	}}
	defer b.cleanup()
	if err := b.setup(); err != nil {
		return err
	}
	if !b.toxiOK {
		rep.Notes = append(rep.Notes, "toxiproxy not measured: "+b.toxiWhy)
	}

	// finproxy alone first, on a fresh lab: the churn runs leave tens of thousands of
	// TIME_WAIT sockets behind for a minute, which the observer would poll meanwhile.
	rep.Delay, rep.Hold = map[string]*delayResult{}, map[string]*holdResult{}
	for _, v := range o.variants {
		if !isFinproxy(v) {
			continue
		}
		if o.parts["delay"] && strings.HasPrefix(v, "finproxy-handshake") {
			// The delay rule holds the client's SYN: a handshake config.
			rep.Delay[v] = b.delayRun(v)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if o.parts["hold"] {
			rep.Hold[v] = b.holdRun(v)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	// The comparison: every variant once per repetition, in an order that rotates.
	for r := range o.reps {
		if !o.parts["compare"] {
			break
		}
		for i := range o.variants {
			v := o.variants[(i+r)%len(o.variants)]
			if v == "toxiproxy" && !b.toxiOK {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			vr := b.runVariant(v, r+1)
			if vr.Err != "" {
				b.log("%s rep %d: %s", v, r+1, vr.Err)
			}
			rep.Runs = append(rep.Runs, vr)
		}
	}
	if o.parts["sim"] {
		rep.Sim = b.simRun()
	}
	rep.Meta.LoadEnd = loadavg()
	rep.Meta.Seconds = time.Since(started).Seconds()

	rep.summarize()
	rep.print(os.Stdout)
	if o.jsonPath != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// setup builds the namespaces, starts the server and writes the configs.
func (b *bench) setup() error {
	// A benchmark killed before its teardown (SIGKILL) left its namespaces: remove those
	// of dead runs (lab's lock tells them from live ones).
	if removed, err := lab.Cleanup(labPrefix); err != nil {
		b.log("removing a dead run's namespaces: %v", err)
	} else if len(removed) > 0 {
		b.log("removed what a killed run left: %s", strings.Join(removed, ", "))
	}
	b.log("building the lab (client, router, server namespaces)")
	tune := map[string]string{
		// Churn: many short connections from one address to one port, each leaving a
		// TIME_WAIT socket at the side that closed first.
		"net.ipv4.tcp_tw_reuse":        "1",
		"net.ipv4.ip_local_port_range": "1024 65535",
		"net.core.somaxconn":           "4096",
		"net.ipv4.tcp_max_syn_backlog": "4096",
	}
	topo, err := lab.New(b.ctx, lab.Options{Prefix: labPrefix, Sysctls: map[string]map[string]string{
		lab.RoleClient: tune, lab.RoleRouter: tune, lab.RoleServer: tune,
	}})
	if err != nil {
		return err
	}
	b.topo = topo
	// Named in the log: what the benchmark made, and all it removes (scripts/test checks).
	b.log("lab %s-%s: namespaces %s, %s, %s", labPrefix, topo.ID, topo.Client, topo.Router, topo.Server)
	// Extra client addresses: the churn's connections come from each in turn, so that the
	// TIME_WAIT sockets they leave (the client closes first) never exhaust one address's
	// ephemeral ports. Several clients behind the router, as on a real network.
	var srcs []string
	a := topo.ClientPrefix.Addr()
	for i := range 32 {
		ip := a.As4()
		ip[3] = byte(100 + i)
		addr := netip.AddrFrom4(ip)
		if out, err := exec.CommandContext(b.ctx, "ip", "-n", topo.Client, "addr", "add",
			netip.PrefixFrom(addr, topo.ClientPrefix.Bits()).String(), "dev", lab.ClientLink).CombinedOutput(); err != nil {
			return fmt.Errorf("add client address %s: %v: %s", addr, err, out)
		}
		srcs = append(srcs, addr.String())
	}
	b.sources = strings.Join(srcs, ",")
	b.serverAddr = netip.AddrPortFrom(topo.ServerAddr, benchPort).String()
	b.routerAddr = netip.AddrPortFrom(topo.RouterClientAddr, benchPort).String()
	if b.tmp, err = os.MkdirTemp("", "fpbench-"); err != nil {
		return err
	}
	b.passCfg = filepath.Join(b.tmp, "pass.toml")
	if err := os.WriteFile(b.passCfg, []byte(passConfig(topo.ServerAddr)), 0o644); err != nil {
		return err
	}
	b.teardownCfg = filepath.Join(b.tmp, "teardown.toml")
	if err := os.WriteFile(b.teardownCfg, []byte(teardownConfig(topo.ServerAddr)), 0o644); err != nil {
		return err
	}
	b.delayCfg = filepath.Join(b.tmp, "delay.toml")
	if err := os.WriteFile(b.delayCfg, []byte(delayConfig(topo.ServerAddr, b.o.delay)), 0o644); err != nil {
		return err
	}
	if b.server, err = b.spawn(lab.RoleServer, "server", false, "_serve", "-listen", b.serverAddr); err != nil {
		return err
	}
	if _, err := b.server.expect(b.ctx, "ready", 10*time.Second); err != nil {
		return err
	}
	b.checkToxiproxy()
	return nil
}

func (b *bench) checkToxiproxy() {
	if !contains(b.o.variants, "toxiproxy") {
		b.toxiWhy = "not among --variants"
		return
	}
	out, err := exec.Command(b.o.toxiproxy, "-version").CombinedOutput()
	if err != nil {
		b.toxiWhy = fmt.Sprintf("%s cannot run (%v): install it with `GOBIN=$PWD/bin/toxiproxy go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0` (scripts/bench does)", b.o.toxiproxy, err)
		return
	}
	b.toxiOK = true
	b.log("toxiproxy: %s", strings.TrimSpace(string(out)))
}

// allVariants are the benchmark's variants, in display order.
var allVariants = []string{"direct", "toxiproxy", "finproxy-teardown", "finproxy-handshake", "finproxy-teardown-noobs", "finproxy-handshake-noobs"}

// observes reports whether a finproxy variant observes both ends (finproxy run's default).
func observes(v string) bool { return !strings.HasSuffix(v, "-noobs") }

// configFor is a finproxy variant's config: the teardown rules or the handshake ones.
func (b *bench) configFor(v string) string {
	if strings.HasPrefix(v, "finproxy-teardown") {
		return b.teardownCfg
	}
	return b.passCfg
}

// teardownConfig is lost-final-ack's rule and lost-fin's, set to pass what they match
// (the ACK of the server's FIN, every FIN): rules about the teardown only, so the
// handshake is not queued.
func teardownConfig(server netip.Addr) string {
	return fmt.Sprintf(`name = "bench-teardown"
description = "the rules of lost-final-ack and lost-fin, passing what they match: no handshake queued"

[target]
port = %d
address = ["%s"]
hook = "forward"
queue = %d

[[rule]]
name = "final-ack"
side = "client"
flags = "pure-ack"
phase = "ack-of-server-fin"
action = "pass"

[[rule]]
name = "fins"
has_flags = "FIN"
action = "pass"
`, benchPort, server, benchQ)
}

// passConfig has a rule on the handshake (and on FIN and RST) that passes everything.
func passConfig(server netip.Addr) string {
	return fmt.Sprintf(`name = "bench-pass"
description = "matches the benchmark's connections (their SYN, FIN and RST segments) and passes everything"

[target]
port = %d
address = ["%s"]
hook = "forward"
queue = %d

[[rule]]
name = "pass-syn"
has_flags = "SYN"
action = "pass"

[[rule]]
name = "pass-fin"
has_flags = "FIN"
action = "pass"

[[rule]]
name = "pass-rst"
has_flags = "RST"
action = "pass"
`, benchPort, server, benchQ)
}

func delayConfig(server netip.Addr, d time.Duration) string {
	return fmt.Sprintf(`name = "bench-delay"
description = "delays every client SYN by %[3]s"

[target]
port = %[1]d
address = ["%[2]s"]
hook = "forward"
queue = %[4]d

[[rule]]
name = "delay-syn"
side = "client"
flags = "SYN"
action = "delay"
delay = "%[3]s"

[[rule]]
name = "pass-fin"
has_flags = "FIN"
action = "pass"
`, benchPort, server, d, benchQ)
}

// spawn starts this program with args in the role's namespace.
func (b *bench) spawn(role, name string, stdin bool, args ...string) (*proc, error) {
	p, err := start(name, b.topo.Command(b.ctx, role, b.self, args...), stdin)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

func (b *bench) cleanup() {
	for _, p := range b.procs {
		p.kill()
	}
	if b.topo != nil {
		if err := b.topo.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "fpbench: remove the lab:", err)
		}
	}
	if b.tmp != "" {
		_ = os.RemoveAll(b.tmp)
	}
}

// client runs one client workload in the client namespace and returns its result.
func (b *bench) client(workload, addr string, args ...string) (*clientResult, error) {
	a := append([]string{"_client", "-workload", workload, "-addr", addr}, args...)
	cpu0 := readCPU()
	p, err := b.spawn(lab.RoleClient, "client "+workload, false, a...)
	if err != nil {
		return nil, err
	}
	lines, err := p.wait(b.o.duration + 60*time.Second)
	cpu := readCPU().since(cpu0)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("client %s printed nothing: %s", workload, p.stderr)
	}
	var r clientResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return nil, fmt.Errorf("client %s: %w", workload, err)
	}
	r.CPU = &cpu
	return &r, nil
}

// cpuTimes are the machine's CPU times from /proc/stat, in clock ticks.
type cpuTimes struct{ user, system, softirq, idle, total uint64 }

func readCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var v [10]uint64
	var t cpuTimes
	for i := 1; i < len(f) && i <= len(v); i++ {
		v[i-1], _ = strconv.ParseUint(f[i], 10, 64)
		t.total += v[i-1]
	}
	// user nice system idle iowait irq softirq steal guest guest_nice
	t.user, t.system, t.idle, t.softirq = v[0]+v[1], v[2]+v[5], v[3]+v[4], v[6]
	return t
}

// cpuUse is how the machine's CPUs were used during a workload, in percent of all CPUs.
type cpuUse struct {
	Busy    float64 `json:"busy_pct"`
	User    float64 `json:"user_pct"`
	System  float64 `json:"system_pct"`
	Softirq float64 `json:"softirq_pct"`
}

func (t cpuTimes) since(a cpuTimes) cpuUse {
	d := float64(t.total - a.total)
	if d <= 0 {
		return cpuUse{}
	}
	pct := func(x, y uint64) float64 { return 100 * float64(x-y) / d }
	return cpuUse{Busy: 100 - pct(t.idle, a.idle), User: pct(t.user, a.user), System: pct(t.system, a.system), Softirq: pct(t.softirq, a.softirq)}
}

// serverCount asks the server how many churn connections reached it (from the client
// namespace, straight to the server: through the router, and through finproxy when it runs).
func (b *bench) serverCount() (int64, error) {
	var n int64
	err := b.topo.Do(lab.RoleClient, func() error {
		c, err := net.DialTimeout("tcp", b.serverAddr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'n'}); err != nil {
			return err
		}
		var buf [8]byte
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return err
		}
		n = int64(binary.BigEndian.Uint64(buf[:]))
		return nil
	})
	return n, err
}

// startFinproxy runs the finproxy helper in the router namespace until it is ready.
func (b *bench) startFinproxy(cfg string, observe bool, extra ...string) (*proc, error) {
	args := []string{"_proxy", "-config", cfg, "-queues", strconv.Itoa(b.o.queues), "-nice", strconv.Itoa(b.o.nice)}
	if observe {
		args = append(args, "-observe-netns", b.topo.Client+","+b.topo.Server)
	}
	if b.o.profileDir != "" {
		b.nprof++
		args = append(args, "-cpuprofile", filepath.Join(b.o.profileDir, fmt.Sprintf("finproxy-%02d.pprof", b.nprof)))
	}
	args = append(args, extra...)
	p, err := b.spawn(lab.RoleRouter, "finproxy", false, args...)
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(b.ctx, "ready", 30*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// stopFinproxy stops the helper and reads its summary.
func (b *bench) stopFinproxy(p *proc) (*proxyResult, error) {
	lines, err := p.stop(60 * time.Second)
	if err != nil {
		return nil, err
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			var r proxyResult
			if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
				return nil, err
			}
			if r.Error != "" {
				return &r, errors.New("finproxy: " + r.Error)
			}
			return &r, nil
		}
	}
	return nil, fmt.Errorf("finproxy printed no summary: %s", p.stderr)
}

// startToxiproxy runs Toxiproxy in the router namespace with one proxy from the router's
// address to the server, and waits until it accepts connections.
func (b *bench) startToxiproxy() (*proc, error) {
	cfg := filepath.Join(b.tmp, "toxiproxy.json")
	js := fmt.Sprintf(`[{"name":"bench","listen":%q,"upstream":%q,"enabled":true}]`, b.routerAddr, b.serverAddr)
	if err := os.WriteFile(cfg, []byte(js), 0o644); err != nil {
		return nil, err
	}
	host := b.topo.RouterClientAddr.String()
	cmd := b.topo.Command(b.ctx, lab.RoleRouter, b.o.toxiproxy, "-host", host, "-port", strconv.Itoa(toxiAPI), "-config", cfg)
	// Its default info level logs every connection; finproxy's event log is off too.
	cmd.Env = append(os.Environ(), "LOG_LEVEL=warn")
	p, err := start("toxiproxy", cmd, false)
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := b.topo.Do(lab.RoleClient, func() error {
			c, err := net.DialTimeout("tcp", b.routerAddr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("toxiproxy ended: %v: %s", p.err, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("toxiproxy does not accept connections on %s: %v: %s", b.routerAddr, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelStats reads the finproxy queue's kernel counters in the router namespace.
func (b *bench) kernelStats() (*nfq.KernelQueueStats, error) {
	var ks nfq.KernelQueueStats
	err := b.topo.Do(lab.RoleRouter, func() error {
		var err error
		ks, err = nfq.KernelStats(benchQ)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &ks, nil
}

// variantRun is one variant's workloads in one repetition.
type variantRun struct {
	Variant string        `json:"variant"`
	Rep     int           `json:"rep"`
	Bulk    *clientResult `json:"bulk,omitempty"`
	Churn   *clientResult `json:"churn,omitempty"`
	RR      *clientResult `json:"rr,omitempty"`
	// finproxy: its summary, the kernel queue's counters across the churn workload, and
	// its memory after the churn.
	Proxy       *proxyResult `json:"finproxy,omitempty"`
	ChurnQueue  *queueDelta  `json:"churn_queue,omitempty"`
	MemAfterRun *memInfo     `json:"mem_after_churn,omitempty"`
	// ChurnCPU is the CPU time spent during the churn workload: by finproxy's process
	// (finproxy variants), and by the whole machine (every variant).
	ChurnCPU *cpuDelta `json:"churn_cpu,omitempty"`
	Err      string    `json:"error,omitempty"`
}

// cpuDelta is CPU time spent over a workload, in seconds of one CPU.
type cpuDelta struct {
	Finproxy float64 `json:"finproxy_s,omitempty"`
	Busy     float64 `json:"machine_busy_s"`
	Total    float64 `json:"machine_total_s"`
}

// cpuNow reads the machine's CPU times and, with pid > 0, the process's.
func cpuNow(pid int) (proc, busy, total time.Duration, err error) {
	if busy, total, err = machineCPU(); err != nil || pid <= 0 {
		return 0, busy, total, err
	}
	proc, err = procCPU(pid)
	return proc, busy, total, err
}

// queueDelta is how the kernel's counters of the queue changed.
type queueDelta struct {
	Queued      uint32 `json:"queued"`
	Dropped     uint32 `json:"dropped"`
	UserDropped uint32 `json:"user_dropped"`
	MaxWaiting  uint32 `json:"waiting_at_end"`
}

func delta(a, z *nfq.KernelQueueStats) *queueDelta {
	if a == nil || z == nil {
		return nil
	}
	return &queueDelta{Queued: z.IDSequence - a.IDSequence, Dropped: z.Dropped - a.Dropped,
		UserDropped: z.UserDropped - a.UserDropped, MaxWaiting: z.Waiting}
}

func (b *bench) runVariant(v string, rep int) (vr variantRun) {
	vr = variantRun{Variant: v, Rep: rep}
	b.log("rep %d: %s", rep, v)
	addr := b.serverAddr
	var px, tp *proc
	var err error
	switch v {
	case "finproxy-teardown", "finproxy-handshake", "finproxy-teardown-noobs", "finproxy-handshake-noobs":
		if px, err = b.startFinproxy(b.configFor(v), observes(v)); err != nil {
			vr.Err = err.Error()
			return vr
		}
		defer func() {
			res, err := b.stopFinproxy(px)
			vr.Proxy = res
			if err != nil && vr.Err == "" {
				vr.Err = err.Error()
			}
		}()
	case "toxiproxy":
		if tp, err = b.startToxiproxy(); err != nil {
			vr.Err = err.Error()
			return vr
		}
		defer func() {
			if _, err := tp.stop(10 * time.Second); err != nil && !strings.Contains(err.Error(), "signal") {
				b.log("toxiproxy: %v", err)
			}
		}()
		addr = b.routerAddr
	}
	d := b.o.duration.String()
	settle := func() { time.Sleep(200 * time.Millisecond) }
	var errs []string
	if vr.Bulk, err = b.client("bulk", addr, "-duration", d); err != nil {
		errs = append(errs, err.Error())
	}
	settle()
	if vr.RR, err = b.client("rr", addr, "-duration", d); err != nil {
		errs = append(errs, err.Error())
	}
	settle()
	var before *nfq.KernelQueueStats
	if px != nil {
		before, _ = b.kernelStats()
	}
	pid := 0
	if px != nil {
		pid = px.cmd.Process.Pid
	}
	p0, busy0, total0, cpuErr0 := cpuNow(pid)
	seen0, err0 := b.serverCount()
	if vr.Churn, err = b.client("churn", addr, "-duration", d, "-parallel", "8", "-sources", b.sources); err != nil {
		errs = append(errs, err.Error())
	} else if seen1, err1 := b.serverCount(); err0 == nil && err1 == nil {
		vr.Churn.ServerConns = seen1 - seen0
		vr.Churn.ConnsPS = float64(seen1-seen0) / vr.Churn.Seconds
	} else {
		errs = append(errs, fmt.Sprintf("server count: %v", errors.Join(err0, err1)))
	}
	if p1, busy1, total1, cpuErr1 := cpuNow(pid); cpuErr0 == nil && cpuErr1 == nil {
		vr.ChurnCPU = &cpuDelta{Finproxy: (p1 - p0).Seconds(), Busy: (busy1 - busy0).Seconds(), Total: (total1 - total0).Seconds()}
	}
	if px != nil {
		after, _ := b.kernelStats()
		vr.ChurnQueue = delta(before, after)
		if m, err := readMem(px.cmd.Process.Pid); err == nil {
			vr.MemAfterRun = &m
		}
	}
	vr.Err = strings.Join(errs, "; ")
	return vr
}

// delayResult is the delay accuracy measurement.
type delayResult struct {
	Configured string        `json:"configured"`
	Samples    int           `json:"samples"`
	ErrP50     time.Duration `json:"error_p50_ns"`
	ErrP99     time.Duration `json:"error_p99_ns"`
	ErrMax     time.Duration `json:"error_max_ns"`
	ErrMin     time.Duration `json:"error_min_ns"`
	Dial       *clientResult `json:"dial,omitempty"` // the client's connect times with the delay
	Proxy      *proxyResult  `json:"-"`
	Queue      *nfq.Stats    `json:"queue,omitempty"`
	Err        string        `json:"error,omitempty"`
}

func isFinproxy(v string) bool { return strings.HasPrefix(v, "finproxy") }

func (b *bench) delayRun(v string) *delayResult {
	b.log("%s: delay accuracy (%d connections, client SYN delayed %v)", v, b.o.delayConns, b.o.delay)
	r := &delayResult{Configured: b.o.delay.String()}
	px, err := b.startFinproxy(b.delayCfg, observes(v), "-delay", b.o.delay.String())
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Dial, err = b.client("dial", b.serverAddr, "-conns", strconv.Itoa(b.o.delayConns), "-parallel", "8", "-sources", b.sources)
	if err != nil {
		r.Err = err.Error()
	}
	res, err := b.stopFinproxy(px)
	if err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	r.Proxy = res
	if res != nil {
		r.Queue = &res.Queue
		abs := make([]time.Duration, len(res.DelayErrors))
		for i, e := range res.DelayErrors {
			abs[i] = max(e, -e)
		}
		r.Samples, r.ErrP50, r.ErrP99 = percentiles(abs)
		if len(abs) > 0 {
			r.ErrMax = abs[len(abs)-1]
			r.ErrMin = abs[0]
		}
	}
	return r
}

// holdResult is the memory measurement with many open connections.
type holdResult struct {
	Conns  int      `json:"conns"`
	Failed int      `json:"failed"`
	Idle   *memInfo `json:"idle,omitempty"` // after start-up
	Held   *memInfo `json:"held,omitempty"` // with the connections open: the highest of HeldSamples
	// HeldSamples are the VmRSS readings with the connections open, 500 ms apart.
	HeldSamples []uint64    `json:"held_samples_bytes,omitempty"`
	Closed      *memInfo    `json:"closed,omitempty"` // after they were closed
	Queue       *queueDelta `json:"queue,omitempty"`
	// CloseQueue is the kernel queue's count while the connections close at once.
	CloseQueue *queueDelta  `json:"close_queue,omitempty"`
	Proxy      *proxyResult `json:"finproxy,omitempty"`
	OpenSecond float64      `json:"open_seconds"`
	Err        string       `json:"error,omitempty"`
}

func (b *bench) holdRun(v string) *holdResult {
	b.log("%s: memory with %d open connections", v, b.o.holdConns)
	r := &holdResult{}
	var extra []string
	heap := ""
	if b.o.profileDir != "" {
		heap = filepath.Join(b.o.profileDir, "heap-"+v+".pprof")
		extra = append(extra, "-heapprofile", heap)
	}
	px, err := b.startFinproxy(b.configFor(v), observes(v), extra...)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	pid := px.cmd.Process.Pid
	time.Sleep(500 * time.Millisecond)
	if m, err := readMem(pid); err == nil {
		r.Idle = &m
	}
	before, _ := b.kernelStats()
	t0 := time.Now()
	hc, err := b.spawn(lab.RoleClient, "client hold", true, "_client", "-workload", "hold", "-addr", b.serverAddr,
		"-conns", strconv.Itoa(b.o.holdConns), "-parallel", "8")
	if err == nil {
		var line string
		line, err = hc.expect(b.ctx, "held ", 90*time.Second)
		r.OpenSecond = time.Since(t0).Seconds()
		if err == nil {
			_, _ = fmt.Sscanf(line, "held %d %d", &r.Conns, &r.Failed)
			time.Sleep(time.Second) // the observer polls, the engine has seen every SYN
			// RSS moves with the collector's cycle and with what the observer is doing
			// (its polls, its scans of /proc): one reading a second after the last
			// connect gave 53 to 70 MiB from run to run, and less than it settles at.
			// Read every 500 ms for 5 s; Held is the highest reading.
			n := 10
			if b.o.smoke {
				n = 1
			}
			for i := range n {
				if i > 0 {
					time.Sleep(500 * time.Millisecond)
				}
				if m, err := readMem(pid); err == nil {
					r.HeldSamples = append(r.HeldSamples, m.RSS)
					if r.Held == nil || m.RSS > r.Held.RSS {
						r.Held = &m
					}
				}
			}
			if heap != "" {
				// The live heap with the connections open, after the RSS was read.
				_ = px.cmd.Process.Signal(syscall.SIGUSR1)
				if _, herr := px.expect(b.ctx, "heap profile written", 10*time.Second); herr != nil {
					b.log("%s: heap profile: %v", v, herr)
				}
			}
			after, _ := b.kernelStats()
			r.Queue = delta(before, after)
			_ = hc.stdin.Close()
			_, err = hc.expect(b.ctx, "closed", 60*time.Second)
			time.Sleep(1500 * time.Millisecond)
			closed, _ := b.kernelStats()
			r.CloseQueue = delta(after, closed)
			if m, err := readMem(pid); err == nil {
				r.Closed = &m
			}
		}
		hc.kill()
	}
	if err != nil {
		r.Err = err.Error()
	}
	res, err := b.stopFinproxy(px)
	r.Proxy = res
	if err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	return r
}

// simRun drives the engine in a separate process with synthetic connections.
func (b *bench) simRun() *simResult {
	b.log("finproxy: %d connections through decoder and engine in-process", b.o.simConns)
	cmd := exec.CommandContext(b.ctx, b.self, "_engine-churn", "-config", b.passCfg, "-conns", strconv.Itoa(b.o.simConns))
	p, err := start("engine churn", cmd, false)
	if err != nil {
		return &simResult{Err: err.Error()}
	}
	b.procs = append(b.procs, p)
	lines, err := p.wait(5 * time.Minute)
	if err != nil {
		return &simResult{Err: err.Error()}
	}
	var r simResult
	if len(lines) == 0 {
		return &simResult{Err: "no output: " + p.stderr.String()}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return &simResult{Err: err.Error()}
	}
	return &r
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// machineInfo describes where the benchmark ran.
type machineInfo struct {
	Date      string  `json:"date"`
	Host      string  `json:"host"`
	Kernel    string  `json:"kernel"`
	CPU       string  `json:"cpu"`
	CPUs      int     `json:"cpus"`
	Go        string  `json:"go"`
	LoadStart string  `json:"load_start"`
	LoadEnd   string  `json:"load_end"`
	Seconds   float64 `json:"seconds"`
}

func machine() machineInfo {
	m := machineInfo{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadavg()}
	m.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
