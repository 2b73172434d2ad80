package main

// The applications: one server (in the server namespace) and one client process per
// workload (in the client namespace), the same programs for every variant. The first byte
// a client sends says what it wants:
//
//	'b' bulk: the client sends frames (4-byte length, then that many bytes) until an empty
//	  one; the server answers with the byte count (no half-close: Toxiproxy closes both
//	  directions when one ends)
//	'c' churn and hold: the server reads until EOF and closes
//	'r' request/response: 64-byte requests, each answered with 64 bytes, until EOF
//	'n' the count of 'c' connections so far (8 bytes): the churn rate is counted where
//	  the connections arrive (through Toxiproxy, a connection the client made is not yet
//	  one the server sees)

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const rrSize = 64

// churnSeen counts the churn connections whose byte reached the server.
var churnSeen atomic.Int64

// serve is the server helper: it accepts until killed.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("listen", "", "address to listen on")
	_ = fs.Parse(args)
	lc := net.ListenConfig{}
	ln, err := lc.Listen(ctxBackground(), "tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go handleConn(c)
	}
}

func handleConn(c net.Conn) {
	defer c.Close()
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		return
	}
	switch kind[0] {
	case 'b':
		r := bufio.NewReaderSize(c, 256<<10)
		var n int64
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			k := int64(binary.BigEndian.Uint32(hdr[:]))
			if k == 0 {
				break
			}
			if _, err := r.Discard(int(k)); err != nil {
				return
			}
			n += k
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		_, _ = c.Write(out[:])
	case 'n':
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(churnSeen.Load()))
		_, _ = c.Write(out[:])
	case 'c':
		churnSeen.Add(1)
		var buf [64]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	case 'r':
		var buf [rrSize]byte
		for {
			if _, err := io.ReadFull(c, buf[:]); err != nil {
				return
			}
			if _, err := c.Write(buf[:]); err != nil {
				return
			}
		}
	}
}

// clientResult is what a client helper prints (JSON) when its workload is done.
type clientResult struct {
	Workload string  `json:"workload"`
	Seconds  float64 `json:"seconds"`
	// bulk
	Bytes int64   `json:"bytes,omitempty"`
	MBps  float64 `json:"mb_per_s,omitempty"`
	// churn, dial, hold: connections the client completed (for churn, ConnsPS is set by
	// the orchestrator from the connections the server saw: ServerConns)
	Conns       int64   `json:"conns,omitempty"`
	ConnsPS     float64 `json:"conns_per_s,omitempty"`
	ServerConns int64   `json:"server_conns,omitempty"`
	Errors      int64   `json:"errors,omitempty"`
	// rr: round-trip times; churn and dial: connect times
	Samples  int           `json:"samples,omitempty"`
	P50      time.Duration `json:"p50_ns,omitempty"`
	P99      time.Duration `json:"p99_ns,omitempty"`
	FirstErr string        `json:"first_error,omitempty"`
	// CPU is the whole machine's CPU use while the workload ran (set by the orchestrator).
	CPU *cpuUse `json:"cpu,omitempty"`
}

// client is the client helper: it runs one workload against addr and prints the result.
func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	workload := fs.String("workload", "", "bulk, churn, rr, dial or hold")
	addr := fs.String("addr", "", "server address")
	dur := fs.Duration("duration", 2*time.Second, "how long (bulk, churn, rr)")
	par := fs.Int("parallel", 8, "parallel clients (churn, dial, hold)")
	conns := fs.Int("conns", 0, "connections to make (dial, hold)")
	sources := fs.String("sources", "", "comma-separated local addresses the churn rotates over")
	_ = fs.Parse(args)
	var srcs []net.Addr
	for _, a := range strings.Split(*sources, ",") {
		if a = strings.TrimSpace(a); a != "" {
			ip := net.ParseIP(a)
			if ip == nil {
				return fmt.Errorf("-sources: bad address %q", a)
			}
			srcs = append(srcs, &net.TCPAddr{IP: ip})
		}
	}
	var r clientResult
	var err error
	switch *workload {
	case "bulk":
		r, err = runBulk(*addr, *dur)
	case "churn":
		r, err = runChurn(*addr, *dur, *par, 0, srcs)
	case "dial":
		r, err = runChurn(*addr, 0, *par, *conns, srcs)
	case "rr":
		r, err = runRR(*addr, *dur)
	case "hold":
		return runHold(*addr, *par, *conns)
	default:
		return fmt.Errorf("unknown workload %q", *workload)
	}
	if err != nil {
		return err
	}
	r.Workload = *workload
	return json.NewEncoder(os.Stdout).Encode(r)
}

func runBulk(addr string, d time.Duration) (clientResult, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return clientResult{}, err
	}
	defer c.Close()
	const frame = 256 << 10
	buf := make([]byte, 1+4+frame)
	buf[0] = 'b'
	binary.BigEndian.PutUint32(buf[1:], frame)
	start := time.Now()
	end := start.Add(d)
	for first := true; time.Now().Before(end); first = false {
		b := buf[1:]
		if first {
			b = buf
		}
		if _, err := c.Write(b); err != nil {
			return clientResult{}, err
		}
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
		return clientResult{}, err
	}
	var cnt [8]byte
	if _, err := io.ReadFull(c, cnt[:]); err != nil {
		return clientResult{}, fmt.Errorf("bulk: read the server's count: %w", err)
	}
	el := time.Since(start).Seconds()
	n := int64(binary.BigEndian.Uint64(cnt[:]))
	return clientResult{Seconds: el, Bytes: n, MBps: float64(n) / el / 1e6}, nil
}

// runChurn opens, writes one byte to and closes connections from par goroutines: for d
// (d > 0) or until n connections were made. The client closes first, so each connection
// leaves a TIME_WAIT socket here for a minute: with srcs, successive connections come from
// these addresses in turn, so that no address runs short of ephemeral ports.
func runChurn(addr string, d time.Duration, par, n int, srcs []net.Addr) (clientResult, error) {
	var (
		done, errs atomic.Int64
		issued     atomic.Int64
		mu         sync.Mutex
		dials      []time.Duration
		firstErr   string
		wg         sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	one := []byte{'c'}
	for g := range par {
		wg.Go(func() {
			dialers := []*net.Dialer{{Timeout: 5 * time.Second}}
			if len(srcs) > 0 {
				dialers = dialers[:0]
				for _, s := range srcs {
					dialers = append(dialers, &net.Dialer{Timeout: 5 * time.Second, LocalAddr: s})
				}
			}
			k := g
			local := make([]time.Duration, 0, 1<<14)
			defer func() {
				mu.Lock()
				dials = append(dials, local...)
				mu.Unlock()
			}()
			for {
				if d > 0 && !time.Now().Before(end) {
					return
				}
				if n > 0 && issued.Add(1) > int64(n) {
					return
				}
				t0 := time.Now()
				c, err := dialers[k%len(dialers)].Dial("tcp", addr)
				k++
				if err != nil {
					if errs.Add(1) == 1 {
						mu.Lock()
						firstErr = err.Error()
						mu.Unlock()
					}
					time.Sleep(time.Millisecond)
					continue
				}
				local = append(local, time.Since(t0))
				_, err = c.Write(one)
				c.Close()
				if err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r := clientResult{Seconds: el, Conns: done.Load(), ConnsPS: float64(done.Load()) / el, Errors: errs.Load(), FirstErr: firstErr}
	r.Samples, r.P50, r.P99 = percentiles(dials)
	return r, nil
}

func runRR(addr string, d time.Duration) (clientResult, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return clientResult{}, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{'r'}); err != nil {
		return clientResult{}, err
	}
	var req, resp [rrSize]byte
	rtts := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	end := start.Add(d)
	for i := 0; ; i++ {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		binary.BigEndian.PutUint64(req[:], uint64(i))
		if _, err := c.Write(req[:]); err != nil {
			return clientResult{}, err
		}
		if _, err := io.ReadFull(c, resp[:]); err != nil {
			return clientResult{}, err
		}
		if i >= 100 { // warm-up
			rtts = append(rtts, time.Since(t0))
		}
	}
	r := clientResult{Seconds: time.Since(start).Seconds()}
	r.Samples, r.P50, r.P99 = percentiles(rtts)
	return r, nil
}

// runHold opens n connections (par at a time), sends one byte on each, prints "held N",
// and keeps them open until its standard input ends or it is signalled.
func runHold(addr string, par, n int) error {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				if _, err := c.Write([]byte{'c'}); err != nil {
					failed.Add(1)
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	fmt.Printf("held %d %d\n", int64(n)-failed.Load(), failed.Load())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(eof)
	}()
	select {
	case <-sig:
	case <-eof:
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	fmt.Println("closed")
	return nil
}

// percentiles returns the count, p50 and p99 of ds (sorted in place).
func percentiles(ds []time.Duration) (int, time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
	return len(ds), at(0.50), at(0.99)
}
