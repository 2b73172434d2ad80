package observe

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrNotEvent is returned by ParseLine for lines that carry no record: blank lines and
// the "#" header of the trace file.
var ErrNotEvent = errors.New("not a trace record")

// ErrUnknownEvent is wrapped by ParseLine's error for a well-formed record of an event
// this package does not parse.
var ErrUnknownEvent = errors.New("unknown trace event")

// ParseError describes a line ParseLine could not parse.
type ParseError struct {
	Line   string
	Reason string
	Err    error // ErrUnknownEvent, or nil
}

func (e *ParseError) Error() string { return fmt.Sprintf("trace line %q: %s", e.Line, e.Reason) }
func (e *ParseError) Unwrap() error { return e.Err }

// A trace_pipe line with the default trace options:
//
//	python3-6722    [001] ..s2.   368.771923: inet_sock_set_state: family=AF_INET ...
//
// task-pid, an optional "(tgid)" (option record-tgid), [cpu], optional flags (option
// irq-info), seconds.fraction, event name, body. The task's comm may hold spaces.
var lineRE = regexp.MustCompile(`^\s*(.*?)\s+(?:\(\s*[\d-]+\)\s+)?\[(\d+)\]\s+(?:\S+\s+)?(\d+)\.(\d{1,9}):\s+(\w+):\s?(.*)$`)

var lostRE = regexp.MustCompile(`^CPU:(\d+) \[LOST (\d+) EVENTS\]$`)

// ParseLine parses one line of trace_pipe (or of the trace file) into a StateChange,
// Retransmit (from tcp_retransmit_skb or tcp_retransmit_synack), ResetSent,
// ResetReceived, Marker (tracing_mark_write) or Lost. It is pure: Time is left zero (see
// Clock). Addresses are taken from the fields that match the socket's family and
// IPv4-mapped addresses are unmapped.
func ParseLine(line string) (Event, error) {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
		return nil, ErrNotEvent
	}
	if strings.HasPrefix(line, "CPU:") { // a lost-events line, rare: the regexp is fine
		if m := lostRE.FindStringSubmatch(line); m != nil {
			cpu, _ := strconv.Atoi(m[1])
			n, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				return nil, &ParseError{Line: line, Reason: "lost count: " + err.Error()}
			}
			return Lost{CPU: cpu, Count: n}, nil
		}
	}
	h, ok := splitHeader(line)
	if !ok {
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			return nil, &ParseError{Line: line, Reason: "not a trace record"}
		}
		h = header{task: m[1], cpu: m[2], sec: m[3], frac: m[4], name: m[5], body: m[6]}
	}
	task, name, body := h.task, h.name, h.body
	mono, err := parseStamp(h.sec, h.frac)
	if err != nil {
		return nil, &ParseError{Line: line, Reason: err.Error()}
	}
	meta := EventMeta{Mono: mono, Task: task}
	var fb [16]field
	var ev Event
	switch name {
	case "tracing_mark_write":
		return Marker{Mono: mono, Text: body}, nil
	case "inet_sock_set_state":
		ev, err = parseSetState(meta, fields(fb[:0], body))
	case "tcp_retransmit_skb":
		ev, err = parseRetransmit(meta, fields(fb[:0], body), false)
	case "tcp_retransmit_synack":
		ev, err = parseRetransmit(meta, fields(fb[:0], body), true)
	case "tcp_send_reset":
		ev, err = parseSendReset(meta, fields(fb[:0], body))
	case "tcp_receive_reset":
		ev, err = parseReceiveReset(meta, fields(fb[:0], body))
	default:
		return nil, &ParseError{Line: line, Reason: "event " + name, Err: ErrUnknownEvent}
	}
	if err != nil {
		return nil, &ParseError{Line: line, Reason: name + ": " + err.Error()}
	}
	return ev, nil
}

// parseStamp turns "368" "771613" into nanoseconds (any number of fraction digits up to 9).
func parseStamp(sec, frac string) (time.Duration, error) {
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || s > int64(1<<63-1)/int64(time.Second)-1 {
		return 0, fmt.Errorf("timestamp %s.%s out of range", sec, frac)
	}
	f, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("timestamp %s.%s: %w", sec, frac, err)
	}
	return time.Duration(s)*time.Second + time.Duration(f), nil
}

// header is a trace line split as lineRE splits it.
type header struct{ task, cpu, sec, frac, name, body string }

// splitHeader splits a trace line as lineRE does, without the expression's cost (a
// backtracking match per event was a fifth of finproxy's CPU time while observing a
// connection churn). It reports false where it is not sure; lineRE then decides.
// FuzzSplitHeader checks that both agree.
func splitHeader(line string) (header, bool) {
	if strings.IndexByte(line, '\n') >= 0 {
		return header{}, false
	}
	start := 0
	for start < len(line) && isSpace(line[start]) {
		start++
	}
	// The CPU field: the leftmost "[digits]" after whitespace and before whitespace for
	// which the rest of the line has the expected form (the task's name is the shortest
	// that works, as lineRE's lazy group).
	for i := start; i < len(line); i++ {
		if line[i] != '[' || i == 0 || !isSpace(line[i-1]) {
			continue
		}
		j := i + 1
		for j < len(line) && isDigit(line[j]) {
			j++
		}
		if j == i+1 || j >= len(line) || line[j] != ']' || j+1 >= len(line) || !isSpace(line[j+1]) {
			continue
		}
		sec, frac, name, body, ok := splitAfterCPU(line[j+1:])
		if !ok {
			continue
		}
		return header{task: taskOf(line[start:i]), cpu: line[i+1 : j], sec: sec, frac: frac, name: name, body: body}, true
	}
	return header{}, false
}

// taskOf is the task part of what precedes the CPU field: without the whitespace before
// it and without an optional "(tgid)" (option record-tgid).
func taskOf(s string) string {
	s = trimRightSpace(s)
	if strings.HasSuffix(s, ")") {
		if k := strings.LastIndexByte(s, '('); k > 0 && isSpace(s[k-1]) && isTgid(s[k+1:len(s)-1]) {
			return trimRightSpace(s[:k])
		}
	}
	return s
}

// isTgid matches lineRE's `\s*[\d-]+`.
func isTgid(s string) bool {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i == len(s) {
		return false
	}
	for ; i < len(s); i++ {
		if !isDigit(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// splitAfterCPU splits what follows "[cpu]": whitespace, optional flags and whitespace,
// "sec.frac:", whitespace, "name:", an optional whitespace, the body. The flags are
// taken when the rest allows it (lineRE's greedy optional group).
func splitAfterCPU(s string) (sec, frac, name, body string, ok bool) {
	s = trimLeftSpace(s)
	if k := strings.IndexFunc(s, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }); k > 0 {
		if sec, frac, name, body, ok = splitStamp(trimLeftSpace(s[k:])); ok {
			return
		}
	}
	return splitStamp(s)
}

// splitStamp splits "sec.frac:<ws>name:[ws]body".
func splitStamp(s string) (sec, frac, name, body string, ok bool) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == 0 || i >= len(s) || s[i] != '.' {
		return
	}
	j := i + 1
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	if n := j - i - 1; n < 1 || n > 9 || j >= len(s) || s[j] != ':' {
		return
	}
	sec, frac = s[:i], s[i+1:j]
	rest := s[j+1:]
	if rest == "" || !isSpace(rest[0]) {
		return
	}
	rest = trimLeftSpace(rest)
	k := 0
	for k < len(rest) && isWord(rest[k]) {
		k++
	}
	if k == 0 || k >= len(rest) || rest[k] != ':' {
		return
	}
	name, body = rest[:k], rest[k+1:]
	if body != "" && isSpace(body[0]) {
		body = body[1:]
	}
	return sec, frac, name, body, true
}

// isSpace is RE2's \s: tab, newline, form feed, carriage return, space.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isWord(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

func trimLeftSpace(s string) string {
	for s != "" && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

func trimRightSpace(s string) string {
	for s != "" && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// fieldMap holds an event body's key=value pairs, in order. Values never contain spaces
// in the events parsed here (addresses, numbers, symbols). A slice, not a map: an event
// has about ten fields, and a lookup scans them without allocating a map per event.
type fieldMap []field

type field struct{ k, v string }

// fields appends the pairs of body to f (given with room for them, on the caller's
// stack).
func fields(f fieldMap, body string) fieldMap {
	for tok := range strings.FieldsSeq(body) {
		if k, v, ok := strings.Cut(tok, "="); ok {
			f = append(f, field{k, v})
		}
	}
	return f
}

// lookup returns the value of key k; the last one when k repeats.
func (f fieldMap) lookup(k string) (string, bool) {
	for i := len(f) - 1; i >= 0; i-- {
		if f[i].k == k {
			return f[i].v, true
		}
	}
	return "", false
}

func (f fieldMap) get(k string) (string, error) {
	v, ok := f.lookup(k)
	if !ok {
		return "", fmt.Errorf("no field %s", k)
	}
	return v, nil
}

func (f fieldMap) port(k string) (uint16, error) {
	v, err := f.get(k)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("field %s=%q: not a port", k, v)
	}
	return uint16(n), nil
}

func (f fieldMap) addr(k string) (netip.Addr, error) {
	v, err := f.get(k)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("field %s=%q: not an address", k, v)
	}
	return a.Unmap(), nil
}

func (f fieldMap) state(k string) (State, error) {
	v, err := f.get(k)
	if err != nil {
		return 0, err
	}
	if v == "UNKNOWN" {
		return Unknown, nil
	}
	if !strings.HasPrefix(v, "TCP_") {
		return 0, fmt.Errorf("field %s=%q: not a TCP state", k, v)
	}
	return ParseState(v)
}

// endpoints reads family, sport, dport and the address pair of that family.
func (f fieldMap) endpoints() (family string, src, dst netip.AddrPort, err error) {
	family, err = f.get("family")
	if err != nil {
		return
	}
	var sa, da string
	switch family {
	case "AF_INET":
		sa, da = "saddr", "daddr"
	case "AF_INET6":
		sa, da = "saddrv6", "daddrv6"
	default:
		err = fmt.Errorf("family %q", family)
		return
	}
	sp, err := f.port("sport")
	if err != nil {
		return
	}
	dp, err := f.port("dport")
	if err != nil {
		return
	}
	s, err := f.addr(sa)
	if err != nil {
		return
	}
	d, err := f.addr(da)
	if err != nil {
		return
	}
	return family, netip.AddrPortFrom(s, sp), netip.AddrPortFrom(d, dp), nil
}

func parseSetState(meta EventMeta, f fieldMap) (Event, error) {
	fam, src, dst, err := f.endpoints()
	if err != nil {
		return nil, err
	}
	proto, err := f.get("protocol")
	if err != nil {
		return nil, err
	}
	o, err := f.state("oldstate")
	if err != nil {
		return nil, err
	}
	n, err := f.state("newstate")
	if err != nil {
		return nil, err
	}
	meta.Src, meta.Dst = src, dst
	return StateChange{EventMeta: meta, Old: o, New: n, Family: fam, Proto: proto, Source: SourceTrace}, nil
}

func parseRetransmit(meta EventMeta, f fieldMap, synack bool) (Event, error) {
	fam, src, dst, err := f.endpoints()
	if err != nil {
		return nil, err
	}
	meta.Src, meta.Dst = src, dst
	r := Retransmit{EventMeta: meta, Family: fam, SynAck: synack}
	if synack {
		r.State = SynRecv
		return r, nil
	}
	if r.State, err = f.state("state"); err != nil {
		return nil, err
	}
	if v, ok := f.lookup("err"); ok {
		if r.Err, err = strconv.Atoi(v); err != nil {
			return nil, fmt.Errorf("field err=%q", v)
		}
	}
	return r, nil
}

func parseSendReset(meta EventMeta, f fieldMap) (Event, error) {
	var err error
	for _, p := range []struct {
		k string
		v *netip.AddrPort
	}{{"src", &meta.Src}, {"dest", &meta.Dst}} {
		s, err := f.get(p.k)
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("field %s=%q: not an address and port", p.k, s)
		}
		*p.v = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	r := ResetSent{EventMeta: meta}
	if r.State, err = f.state("state"); err != nil {
		return nil, err
	}
	if r.Reason, err = f.get("reason"); err != nil {
		return nil, err
	}
	return r, nil
}

func parseReceiveReset(meta EventMeta, f fieldMap) (Event, error) {
	fam, src, dst, err := f.endpoints()
	if err != nil {
		return nil, err
	}
	meta.Src, meta.Dst = src, dst
	r := ResetReceived{EventMeta: meta, Family: fam}
	if v, ok := f.lookup("sock_cookie"); ok {
		if r.Cookie, err = strconv.ParseUint(v, 16, 64); err != nil {
			return nil, fmt.Errorf("field sock_cookie=%q", v)
		}
	}
	return r, nil
}
