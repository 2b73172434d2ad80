package main

// The engine's memory over many connections, in-process: a real churn of a million
// connections through the lab does not fit in the benchmark's time budget, so synthetic
// segments (the four a control-scope hook queues per connection: SYN, SYN|ACK and both
// FIN|ACKs, as IP packets) go through segment.Decoder and rules.Engine.Handle, the path
// the runner's queue handler takes, with the benchmark's pass config.

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

type simPoint struct {
	Conns     int    `json:"conns"`
	RSS       uint64 `json:"rss_bytes"`
	HeapInuse uint64 `json:"heap_inuse_bytes"`
	// HeapLive is the heap after a collection (forced right after RSS was read).
	HeapLive uint64 `json:"heap_live_bytes"`
	Tracked  int    `json:"tracked"`
}

type simResult struct {
	Conns       int        `json:"conns"`
	Segments    int        `json:"segments"`
	Seconds     float64    `json:"seconds"`
	NsPerSeg    float64    `json:"ns_per_segment"`
	AllocsPerSg float64    `json:"allocs_per_segment"`
	Points      []simPoint `json:"points"`
	Err         string     `json:"error,omitempty"`
}

type countSink struct{ n uint64 }

func (s *countSink) Verdict(uint32, rules.Verdict) error { s.n++; return nil }

// tcpPacket writes an IPv4 TCP packet without options or payload (checksums are left
// zero: the decoder does not check them).
func tcpPacket(b []byte, src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags byte) []byte {
	b = b[:40]
	clear(b)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 40)
	b[8] = 64
	b[9] = 6
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 65535)
	return b
}

func engineChurn(args []string) error {
	fs := flag.NewFlagSet("engine-churn", flag.ExitOnError)
	cfgPath := fs.String("config", "", "config")
	n := fs.Int("conns", 1000000, "connections")
	_ = fs.Parse(args)
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	sink := &countSink{}
	eng := rules.NewEngine(&cfg.Config, rules.Options{Sink: sink, Log: func(rules.Record) {}})
	dec := segment.NewDecoder()
	server := cfg.Target.Addresses[0].Addr().As4()
	port := cfg.Target.Port
	const (
		fin = 0x01
		syn = 0x02
		ack = 0x10
	)
	buf := make([]byte, 64)
	var id uint32
	handle := func(pkt []byte) {
		var s segment.Segment
		id++
		if err := dec.Decode(pkt, &s); err != nil {
			panic(err)
		}
		eng.Handle(rules.Packet{ID: id, Time: time.Now(), Seg: s, Data: pkt})
	}
	var res simResult
	var ms0, ms runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	step := max(*n/10, 1)
	for i := range *n {
		c := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		cp := uint16(1024 + i%60000)
		isn, isnS := uint32(i)*7919, uint32(i)*104729
		handle(tcpPacket(buf, c, server, cp, port, isn, 0, syn))
		handle(tcpPacket(buf, server, c, port, cp, isnS, isn+1, syn|ack))
		handle(tcpPacket(buf, c, server, cp, port, isn+2, isnS+1, fin|ack))
		handle(tcpPacket(buf, server, c, port, cp, isnS+1, isn+3, fin|ack))
		res.Segments += 4
		if (i+1)%step == 0 || i+1 == 10000 || i+1 == *n {
			runtime.ReadMemStats(&ms)
			p := simPoint{Conns: i + 1, HeapInuse: ms.HeapInuse, Tracked: eng.Conns()}
			if m, err := readMem(os.Getpid()); err == nil {
				p.RSS = m.RSS
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			p.HeapLive = ms.HeapAlloc
			res.Points = append(res.Points, p)
		}
	}
	el := time.Since(start)
	runtime.ReadMemStats(&ms)
	res.Conns = *n
	res.Seconds = el.Seconds()
	res.NsPerSeg = float64(el.Nanoseconds()) / float64(res.Segments)
	res.AllocsPerSg = float64(ms.Mallocs-ms0.Mallocs) / float64(res.Segments)
	if sink.n != uint64(res.Segments) {
		return fmt.Errorf("%d verdicts for %d segments", sink.n, res.Segments)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
