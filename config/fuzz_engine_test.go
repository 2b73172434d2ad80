package config

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/segtest"
	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// FuzzEngine checks that no action panics on a config that Parse accepts, whatever the
// segments: it builds a config from the fuzzer's bytes (rules of every registered action,
// rule keys and action parameters drawn from values at and beyond their bounds), lets
// Parse judge it, and drives an engine with the config through random segments of two
// connections (handshakes, data, FINs, RSTs, retransmissions, sequence numbers off the
// mark, new incarnations) and random time steps up to beyond MaxDuration. It fails on a
// panic (Counters.Panicked, or a log line at level ERROR), on a segment without exactly
// one verdict, and on a rewritten or injected packet that is not well-formed.
//
// The input is a program: one byte per choice, each picking an entry of a table (0: leave
// the key out), then three bytes per segment. fuzzProgram writes the seeds.
func FuzzEngine(f *testing.F) {
	for _, seed := range fuzzEngineSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{b: data}
		src := fuzzConfig(in)
		cfg, err := Parse([]byte(src), "fuzz.toml")
		if err != nil {
			return // FuzzParse checks the errors
		}
		driveEngine(t, cfg, src, in)
	})
}

// fuzzInput hands out the fuzzer's bytes, zeros once they run out.
type fuzzInput struct {
	b []byte
	i int
}

func (in *fuzzInput) byte() byte {
	if in.i >= len(in.b) {
		return 0
	}
	c := in.b[in.i]
	in.i++
	return c
}

func (in *fuzzInput) done() bool { return in.i >= len(in.b) }

// choose returns an entry of pool, or "" (and false) for a 0 choice.
func (in *fuzzInput) choose(pool []string) (string, bool) {
	c := int(in.byte()) % (len(pool) + 1)
	if c == 0 {
		return "", false
	}
	return pool[c-1], true
}

// fuzzRandomDuration, in fuzzPools["duration"], takes 8 more bytes as a time.Duration.
const fuzzRandomDuration = "random"

// fuzzMatchKeys are the rule keys fuzzConfig may give, in the order it decides them;
// fuzzPools the values it writes for them and for action parameters, by key or by the
// parameter's Go type. Strings are written quoted, TOML-escaped; the rest as they are.
var (
	fuzzMatchKeys = []string{"side", "flags", "has_flags", "payload", "phase", "nth", "probability", "limit", "global_limit"}
	fuzzPools     = map[string][]string{
		"side":         {`"client"`, `"server"`, `"any"`},
		"flags":        {`"SYN"`, `"SYN|ACK"`, `"ACK"`, `"pure-ack"`, `"FIN|ACK"`, `"PSH|ACK"`, `"RST"`, `"RST|ACK"`, `"FIN|PSH|ACK"`},
		"has_flags":    {`"FIN"`, `"SYN"`, `"RST"`, `"ACK"`, `"PSH"`},
		"payload":      {`"none"`, `"some"`, `"any"`},
		"phase":        {`"handshake"`, `"established"`, `"after-client-fin"`, `"after-server-fin"`, `"after-both-fins"`, `"ack-of-client-fin"`, `"ack-of-server-fin"`, `["after-client-fin", "after-server-fin"]`},
		"nth":          {"1", "2", "3", "0", "2147483647", "2147483648"},
		"probability":  {"1", "0.5", "0.01", "1e-300", "0", "1.5", "nan"},
		"limit":        {"1", "2", "0", "-1"},
		"global_limit": {"1", "3", "4294967296"},
		"duration": {`"0s"`, `"1ns"`, `"1ms"`, `"20ms"`, `"100ms"`, `"200ms"`, `"250ms"`, `"2s"`, `"59m59s"`, `"1h"`,
			`"1h0m0.000000001s"`, `"2000000h"`, `"2562047h"`, `"-1s"`, fuzzRandomDuration},
		"verdict": {`"pass"`, `"drop"`, `"accept"`, `"retry"`},
		"event":   {`"peer-fin"`, `"own-fin"`, `"client-fin"`, `"server-fin"`, `"both-fins"`, `"none"`},
		"string":  {`"inject"`, `"retransmit"`, `"next-incarnation"`, `"close"`, `"client"`, `"server"`, `"both"`, `""`, `"x"`},
		"int":     {"0", "1", "2", "3", "100", "101", "-1", "9223372036854775807"},
	}
)

// fuzzActions are the registered actions but the test-only ones, sorted.
var fuzzActions = sync.OnceValue(func() []string {
	return slices.DeleteFunc(rules.Actions(), func(n string) bool { return strings.HasPrefix(n, "test-") })
})

// fuzzParams lists an action's parameters, sorted, each with the pool its values come from.
func fuzzParams(action string) (names, pools []string) {
	p := fuzzParamTable()[action]
	return p[0], p[1]
}

// fuzzParamTable is fuzzParams of every action, worked out once.
var fuzzParamTable = sync.OnceValue(func() map[string][2][]string {
	table := map[string][2][]string{}
	for _, a := range fuzzActions() {
		names, pools := actionParams(a)
		table[a] = [2][]string{names, pools}
	}
	return table
})

func actionParams(action string) (names, pools []string) {
	l := &loader{reg: rules.DefaultRegistry()}
	a, _ := rules.NewAction(action)
	t := reflect.TypeOf(a).Elem()
	params := l.paramsOf(action)
	for _, name := range sortedKeys(params) {
		ft := t.FieldByIndex(params[name].index).Type
		pool := "string"
		switch {
		case ft == reflect.TypeFor[rules.Duration]():
			pool = "duration"
		case ft == reflect.TypeFor[rules.Verdict]():
			pool = "verdict"
		case ft == reflect.TypeFor[rules.Event]():
			pool = "event"
		case ft.Kind() == reflect.Int:
			pool = "int"
		}
		names, pools = append(names, name), append(pools, pool)
	}
	return names, pools
}

// fuzzConfig writes the config the input's first bytes choose: one to three rules.
func fuzzConfig(in *fuzzInput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed = %d\n[target]\nport = 8080\n", in.byte())
	nrules := 1 + int(in.byte())%3
	actions := fuzzActions()
	for i := range nrules {
		action := actions[int(in.byte())%len(actions)]
		fmt.Fprintf(&b, "[[rule]]\nname = \"r%d\"\naction = %q\n", i+1, action)
		for _, k := range fuzzMatchKeys {
			if v, ok := in.choose(fuzzPools[k]); ok {
				fmt.Fprintf(&b, "%s = %s\n", k, v)
			}
		}
		names, pools := fuzzParams(action)
		for j, name := range names {
			v, ok := in.choose(fuzzPools[pools[j]])
			if !ok {
				continue
			}
			if v == fuzzRandomDuration {
				var x [8]byte
				for k := range x {
					x[k] = in.byte()
				}
				v = strconv.Quote(time.Duration(binary.LittleEndian.Uint64(x[:])).String())
			}
			fmt.Fprintf(&b, "%s = %s\n", name, v)
		}
	}
	return b.String()
}

// fuzzSteps are the time steps between segments: around the retransmission timeout,
// the defaults of the actions, FIN_WAIT2 and TIME_WAIT, MaxDuration.
var fuzzSteps = []time.Duration{0, time.Millisecond, 15 * time.Millisecond, 120 * time.Millisecond,
	210 * time.Millisecond, 1100 * time.Millisecond, 2100 * time.Millisecond, 31 * time.Second,
	61 * time.Second, 76 * time.Second, 30 * time.Minute, 61 * time.Minute}

// fuzzLogs fails the test on a log record at level ERROR (an action's panic, or a
// rewritten segment that does not decode).
type fuzzLogs struct {
	mu   sync.Mutex
	errs []string
}

func (l *fuzzLogs) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelError }

func (l *fuzzLogs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "stack" {
			msg += " " + a.String()
		}
		return true
	})
	l.errs = append(l.errs, msg)
	return nil
}

func (l *fuzzLogs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *fuzzLogs) WithGroup(string) slog.Handler      { return l }

// Segment kinds of a step (fuzzProgram names them).
const (
	kSYN = iota
	kSYNACK
	kACK
	kData
	kFIN
	kRST
	kDataFIN
	kAgain // the side's last segment again: a retransmission
	nKinds
)

// fuzzSink is the engine's ModifySink: it checks that every packet it is given is
// well-formed and that no segment gets two verdicts.
type fuzzSink struct {
	t        *testing.T
	verdicts []int // by packet id
	records  int   // of queued segments
}

func (s *fuzzSink) Verdict(id uint32, _ rules.Verdict) error {
	if int(id) >= len(s.verdicts) {
		s.t.Errorf("verdict for segment %d, never queued", id)
		return nil
	}
	s.verdicts[id]++
	return nil
}

func (s *fuzzSink) AcceptModified(id uint32, data []byte) error {
	if err := mutate.Check(data); err != nil {
		s.t.Errorf("segment %d accepted with a broken packet: %v", id, err)
	}
	return s.Verdict(id, rules.Accept)
}

func (s *fuzzSink) Inject(data []byte) error {
	if err := mutate.Check(data); err != nil {
		s.t.Errorf("injected a broken packet: %v", err)
	}
	return nil
}

func (s *fuzzSink) record(r rules.Record) {
	if !r.Injected {
		s.records++
	}
}

// fuzzMaxSteps bounds the segments of one input.
const fuzzMaxSteps = 24

// driveEngine hands the engine the segments the rest of the input describes, three bytes
// each: kind, connection and side; a variation (data length, sequence numbers off the
// mark); the time step before it. Then it lets every timer fire and closes the engine.
func driveEngine(t *testing.T, cfg *Config, src string, in *fuzzInput) {
	logs := &fuzzLogs{}
	sink := &fuzzSink{t: t, verdicts: make([]int, fuzzMaxSteps+1)}
	clk := rules.NewFakeClock(t0)
	eng := rules.NewEngine(&cfg.Config, rules.Options{Sink: sink, Log: sink.record, Clock: clk, Logger: slog.New(logs)})
	type side struct {
		nxt  uint32
		last segment.Segment
	}
	var conns [2][2]side // [connection][client, server]
	for c := range conns {
		conns[c][0].nxt, conns[c][1].nxt = 1000+uint32(c)<<20, 5000+uint32(c)<<24
	}
	client := func(c int) netip.AddrPort { return netip.AddrPortFrom(testClient.Addr(), 40000+uint16(c)) }
	n := uint32(0)
	for ; n < fuzzMaxSteps && !in.done(); n++ {
		op, variation, dt := in.byte(), in.byte(), in.byte()
		kind, c, s := int(op)%nKinds, int(op>>3)&1, int(op>>4)&1
		clk.Advance(fuzzSteps[int(dt)%len(fuzzSteps)])
		from, to := client(c), testServer
		if s == 1 {
			from, to = to, from
		}
		me, peer := &conns[c][s], &conns[c][1-s]
		seg := segment.Segment{Src: from, Dst: to, Seq: me.nxt, Ack: peer.nxt, Flags: fACK}
		switch kind {
		case kSYN:
			me = &conns[c][0]
			seg.Src, seg.Dst, seg.Flags, seg.Ack = client(c), testServer, fSYN, 0
			seg.Seq = me.nxt + 100000 // a new incarnation's ISN is beyond the old one's
		case kSYNACK:
			seg.Src, seg.Dst, seg.Flags = testServer, client(c), fSYN|fACK
			me, peer = &conns[c][1], &conns[c][0]
			seg.Seq, seg.Ack = me.nxt+100000, peer.nxt
		case kData:
			seg.Flags, seg.PayloadLen = fPSH|fACK, 1+int(variation)%40
		case kFIN:
			seg.Flags = fFIN | fACK
		case kRST:
			seg.Flags = fRST | fACK
		case kDataFIN:
			seg.Flags, seg.PayloadLen = fFIN|fPSH|fACK, 1+int(variation)%40
		case kAgain:
			if me.last.Src.IsValid() {
				seg = me.last
			}
		}
		if variation&0x80 != 0 && kind != kAgain {
			seg.Seq += uint32(variation) << 8 // off the mark
		}
		eng.Handle(rules.Packet{ID: n + 1, Time: clk.Now(), Seg: seg, Data: segtest.PacketOf(t, seg)})
		me.last = seg
		me.nxt = seg.Seq + seg.SeqLen()
	}
	clk.Advance(2 * rules.MaxDuration) // every delay, hold, injection and copy is due
	eng.Close()
	for _, c := range eng.Counters() {
		if c.Panicked > 0 {
			t.Errorf("rule %s panicked %d times", c.Rule, c.Panicked)
		}
	}
	if len(logs.errs) > 0 {
		t.Errorf("logged at level ERROR:\n\t%s", strings.Join(logs.errs, "\n\t"))
	}
	for id := uint32(1); id <= n; id++ {
		if v := sink.verdicts[id]; v != 1 {
			t.Errorf("segment %d: %d verdicts", id, v)
		}
	}
	if sink.records != int(n) {
		t.Errorf("%d records for %d segments", sink.records, n)
	}
	if t.Failed() {
		t.Fatalf("config:\n%s", src)
	}
}

// fuzzProgram writes the input that makes fuzzConfig write the given rules (each a map of
// keys to the values as fuzzPools writes them, and "action"), then the segments of steps.
func fuzzProgram(seed byte, rules []map[string]string, steps ...[3]byte) []byte {
	index := func(pool []string, v string) byte {
		i := slices.Index(pool, v)
		if i < 0 {
			panic(fmt.Sprintf("%s is not in %q", v, pool))
		}
		return byte(i + 1)
	}
	b := []byte{seed, byte(len(rules) - 1)}
	for _, r := range rules {
		b = append(b, byte(slices.Index(fuzzActions(), r["action"])))
		for _, k := range fuzzMatchKeys {
			if v, ok := r[k]; ok {
				b = append(b, index(fuzzPools[k], v))
			} else {
				b = append(b, 0)
			}
		}
		names, pools := fuzzParams(r["action"])
		for j, name := range names {
			if v, ok := r[name]; ok {
				b = append(b, index(fuzzPools[pools[j]], v))
			} else {
				b = append(b, 0)
			}
		}
	}
	for _, s := range steps {
		b = append(b, s[:]...)
	}
	return b
}

// fuzzStep is a segment of connection 0: its kind, its sender (0 client, 1 server), the
// time step's index in fuzzSteps.
func fuzzStep(kind, side int, dt byte) [3]byte {
	return [3]byte{byte(kind | side<<4), 10, dt}
}

// fuzzEngineSeeds are a connection's life (handshake, data both ways, the client's FIN
// first, a retransmitted FIN, then a new incarnation) under rules of every action with
// their parameters at the bounds, and the overflowing jitter that check once accepted.
func fuzzEngineSeeds() [][]byte {
	life := [][3]byte{
		fuzzStep(kSYN, 0, 0), fuzzStep(kSYNACK, 1, 1), fuzzStep(kACK, 0, 1),
		fuzzStep(kData, 0, 1), fuzzStep(kData, 1, 2), fuzzStep(kACK, 0, 1),
		fuzzStep(kFIN, 0, 3), fuzzStep(kAgain, 0, 4), fuzzStep(kACK, 1, 1),
		fuzzStep(kDataFIN, 1, 2), fuzzStep(kACK, 0, 5),
		fuzzStep(kSYN, 0, 6), fuzzStep(kSYNACK, 1, 1), fuzzStep(kACK, 0, 1), fuzzStep(kData, 0, 1),
	}
	var seeds [][]byte
	for _, r := range []map[string]string{
		{"action": "delay", "has_flags": `"FIN"`, "delay": `"200ms"`, "jitter": `"2000000h"`},
		{"action": "delay", "delay": `"1h"`, "jitter": `"1h"`},
		{"action": "duplicate", "copies": "100", "delay": `"20ms"`},
		{"action": "hold", "side": `"client"`, "has_flags": `"FIN"`, "until": `"peer-fin"`, "timeout": `"1h"`},
		{"action": "merge", "side": `"server"`, "flags": `"pure-ack"`, "timeout": `"1h"`},
		{"action": "merge-data-fin", "side": `"server"`, "timeout": `"1ns"`},
		{"action": "split", "has_flags": `"FIN"`, "phase": `"ack-of-client-fin"`, "delay": `"1h"`},
		{"action": "inject-rst", "toward": `"both"`, "segment": `"drop"`},
		{"action": "replay", "payload": `"some"`, "after": `"next-incarnation"`, "original": `"drop"`, "delay": `"1h"`, "timeout": `"1h"`},
		{"action": "reuse-tuple", "flags": `"SYN"`, "max_age": `"1h"`},
		{"action": "drop", "probability": "0.5", "nth": "2"},
		{"action": "pass", "limit": "1"},
	} {
		seeds = append(seeds, fuzzProgram(1, []map[string]string{r}, life...))
	}
	return seeds
}

// The segments FuzzEngine makes: as rules' engine tests make them (engine_harness_test.go,
// engine_mutate_test.go there).
var (
	t0         = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	testClient = netip.MustParseAddrPort("10.0.0.1:40000")
	testServer = netip.MustParseAddrPort("10.0.0.2:8080")
)

const (
	fSYN = segment.SYN
	fFIN = segment.FIN
	fRST = segment.RST
	fPSH = segment.PSH
	fACK = segment.ACK
)
