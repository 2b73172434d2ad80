package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/finproxy/finproxy/rules"
	"github.com/finproxy/finproxy/segment"
)

// The loader decodes a config key by key rather than into one struct: BurntSushi/toml stops
// at the first error and matches struct fields case-insensitively, while a config must
// report every problem and accept its keys exactly as documented. Every table is decoded into
// map[string]toml.Primitive; each value is then checked against its key's expected type
// and range, and an action's parameters are decoded one by one into its struct fields.

// section loads one top-level key of a config file into l.cfg.
type section struct {
	key  string
	load func(l *loader, p tomlpos.Path, v toml.Primitive)
	// check, when set, runs once every section is loaded (whether or not the key is in the
	// file), for what a section says about the others.
	check func(l *loader)
}

// sections are the top-level keys of a config file. A new section ([lab], [expect], ...) is
// one more entry here, with its field in Config.
var sections = []section{
	{"name", (*loader).loadName, nil},
	{"description", (*loader).loadDescription, nil},
	{"seed", (*loader).loadSeed, nil},
	{"target", (*loader).loadTarget, nil},
	{"rule", (*loader).loadRules, nil},
	{"lab", (*loader).loadLab, nil},
	{"expect", (*loader).loadExpect, (*loader).checkExpect},
}

// targetKeys are the keys of [target].
var targetKeys = []string{"port", "address", "hook", "queue", "unclassified"}

// ruleKeys are the keys of a [[rule]] that select segments, and the action's name. The rest
// of a rule's keys are its action's parameters; where an action names a parameter like one
// of these, the rule key wins.
var ruleKeys = []string{"name", "side", "server_port", "server_address", "flags", "has_flags", "payload", "phase", "nth",
	"probability", "limit", "global_limit", "action"}

type loader struct {
	file string
	reg  *rules.Registry // the actions a rule may name
	md   *toml.MetaData
	loc  *tomlpos.Locator
	cfg  *Config
	errs ConfigErrors
	// scope is set when target.port or target.address is given, even if wrong.
	scope bool
	// params holds the parameters of every registered action, by action name (lazily).
	params map[string]map[string]param
}

// param is an action's parameter: the index of its struct field, and whether a value
// given must be more than zero (the tag option "positive": the field's zero value means
// "not given, use the default", so a zero written in the config would silently become
// the default).
type param struct {
	index    []int
	positive bool
}

func parse(data []byte, file string, reg *rules.Registry) (*Config, ConfigErrors) {
	l := &loader{file: file, reg: reg}
	if len(data) > MaxConfigSize {
		return nil, ConfigErrors{l.tooLarge(data)}
	}
	// The locator runs first: it finds a source that nests too deep for the parser.
	l.loc = tomlpos.Locate(data)
	if l.loc.Deep.Line > 0 {
		return nil, ConfigErrors{l.tooDeep()}
	}
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return nil, ConfigErrors{l.syntaxError(err)}
	}
	l.md = &md
	l.cfg = &Config{Config: rules.Config{
		File:   file,
		Name:   defaultName(file),
		Target: rules.Target{Hook: rules.HookLocal, Queue: rules.DefaultQueue},
	}}
	known := make([]string, len(sections))
	for i, s := range sections {
		known[i] = s.key
	}
	for _, k := range sortedKeys(top) {
		p := tomlpos.Path{}.Key(k)
		if i := slices.Index(known, k); i >= 0 {
			sections[i].load(l, p, top[k])
		} else {
			l.unknownKey(p, k, known)
		}
	}
	for _, s := range sections {
		if s.check != nil {
			s.check(l)
		}
	}
	if !l.scope {
		l.keyErr(tomlpos.Path{"target"}, "no scope: give target.port or target.address")
	}
	return l.cfg, l.errs
}

func defaultName(file string) string {
	if file == "" {
		return ""
	}
	if strings.HasPrefix(file, "<") && strings.HasSuffix(file, ">") {
		return strings.Trim(file, "<>") // a stream, such as <stdin>
	}
	base := filepath.Base(file)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Errors.

func (l *loader) syntaxError(err error) *ConfigError {
	e := &ConfigError{Pos: rules.Position{File: l.file, Line: 1, Col: 1}, Msg: err.Error()}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e.Msg = pe.Message
		if pe.Position.Line > 0 {
			e.Pos.Line = pe.Position.Line
			e.Pos.Col = max(pe.Position.Col, 1)
		}
	}
	return e
}

// tooLarge reports a source over MaxConfigSize, at the line where it goes over.
func (l *loader) tooLarge(data []byte) *ConfigError {
	head := data[:MaxConfigSize]
	line := bytes.Count(head, []byte("\n")) + 1
	col := MaxConfigSize - bytes.LastIndexByte(head, '\n')
	return &ConfigError{Pos: rules.Position{File: l.file, Line: line, Col: col},
		Msg: fmt.Sprintf("the config is %d bytes; a config is at most %d (%s)", len(data), MaxConfigSize, sizeText(MaxConfigSize))}
}

// tooDeep reports where the source nests deeper than MaxDepth, with the first pieces of
// the path there.
func (l *loader) tooDeep() *ConfigError {
	p := l.loc.DeepPath
	key := p.String()
	if len(p) > 4 {
		key = p[:4].String() + "…"
	}
	return &ConfigError{Pos: rules.Position{File: l.file, Line: l.loc.Deep.Line, Col: l.loc.Deep.Col}, Key: key,
		Msg: fmt.Sprintf("nested more than %d levels deep (the deepest keys of a scenario, such as expect.client.max_dwell.FIN_WAIT2, are 4 deep)", MaxDepth)}
}

func (l *loader) errAt(lc tomlpos.LineCol, p tomlpos.Path, format string, args ...any) {
	l.errs = append(l.errs, &ConfigError{
		Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col},
		Key: p.String(),
		Msg: fmt.Sprintf(format, args...),
	})
}

// keyErr reports a problem with the key at p itself (or with the table at p).
func (l *loader) keyErr(p tomlpos.Path, format string, args ...any) {
	l.errAt(l.loc.At(p), p, format, args...)
}

// valErr reports a problem with the value of the key at p.
func (l *loader) valErr(p tomlpos.Path, format string, args ...any) {
	l.errAt(l.loc.Value(p), p, format, args...)
}

func (l *loader) typeErr(p tomlpos.Path, want string, got any) {
	l.valErr(p, "must be %s, not %s", want, tomlType(got))
}

func (l *loader) unknownKey(p tomlpos.Path, k string, known []string) {
	if s := tomlpos.Suggest(k, known); s != "" {
		l.keyErr(p, "unknown key (did you mean %s?)", s)
		return
	}
	l.keyErr(p, "unknown key (known keys: %s)", strings.Join(known, ", "))
}

// tomlType names the TOML type of a decoded value, for messages.
func tomlType(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", v)
	case int64:
		return fmt.Sprintf("an integer (%d)", v)
	case float64:
		return fmt.Sprintf("a float (%s)", strconv.FormatFloat(v, 'g', -1, 64))
	case bool:
		return fmt.Sprintf("a boolean (%t)", v)
	case time.Time:
		return "a date-time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// Values.

// raw returns a value as the TOML parser decoded it: string, int64, float64, bool,
// time.Time, []any, []map[string]any or map[string]any.
func (l *loader) raw(v toml.Primitive) any {
	var x any
	if err := l.md.PrimitiveDecode(v, &x); err != nil {
		return nil
	}
	return x
}

func (l *loader) str(p tomlpos.Path, v toml.Primitive) (string, bool) {
	raw := l.raw(v)
	s, ok := raw.(string)
	if !ok {
		l.typeErr(p, "a string", raw)
	}
	return s, ok
}

func (l *loader) integer(p tomlpos.Path, v toml.Primitive) (int64, bool) {
	raw := l.raw(v)
	n, ok := raw.(int64)
	if !ok {
		l.typeErr(p, "an integer", raw)
	}
	return n, ok
}

// count reads an integer that must be at least 1.
func (l *loader) count(p tomlpos.Path, v toml.Primitive, hint string) (int, bool) {
	n, ok := l.integer(p, v)
	if !ok {
		return 0, false
	}
	if n < 1 || n > math.MaxInt32 {
		l.valErr(p, "%d is out of range: want 1 or more (%s)", n, hint)
		return 0, false
	}
	return int(n), true
}

// number reads a float; an integer will do.
func (l *loader) number(p tomlpos.Path, v toml.Primitive) (float64, bool) {
	switch raw := l.raw(v).(type) {
	case float64:
		return raw, true
	case int64:
		return float64(raw), true
	default:
		l.typeErr(p, "a number", raw)
		return 0, false
	}
}

// strs reads a string or an array of strings, and returns the path of each string.
func (l *loader) strs(p tomlpos.Path, v toml.Primitive) ([]string, []tomlpos.Path, bool) {
	switch raw := l.raw(v).(type) {
	case string:
		return []string{raw}, []tomlpos.Path{p}, true
	case []any:
		ss, ps, ok := l.strArray(p, raw)
		if ok && len(ss) == 0 {
			l.valErr(p, "empty list: give at least one, or leave %s out", p[len(p)-1])
			ok = false
		}
		return ss, ps, ok
	default:
		l.typeErr(p, "a string or an array of strings", raw)
		return nil, nil, false
	}
}

// strArray reads the array raw at p as strings, with the path of each: an element that is
// not a string is a type error, its place kept as "".
func (l *loader) strArray(p tomlpos.Path, raw []any) ([]string, []tomlpos.Path, bool) {
	ss := make([]string, 0, len(raw))
	ps := make([]tomlpos.Path, 0, len(raw))
	ok := true
	for i, e := range raw {
		s, isStr := e.(string)
		if !isStr {
			l.typeErr(p.Index(i+1), "a string", e)
			ok = false
		}
		ss = append(ss, s)
		ps = append(ps, p.Index(i+1))
	}
	return ss, ps, ok
}

func (l *loader) table(p tomlpos.Path, v toml.Primitive) (map[string]toml.Primitive, bool) {
	raw := l.raw(v)
	if _, ok := raw.(map[string]any); !ok {
		l.typeErr(p, "a table", raw)
		return nil, false
	}
	var m map[string]toml.Primitive
	if err := l.md.PrimitiveDecode(v, &m); err != nil {
		l.valErr(p, "%v", err)
		return nil, false
	}
	return m, true
}

// tables reads an array of tables, written [[key]] or key = [{...}, ...].
func (l *loader) tables(p tomlpos.Path, v toml.Primitive) ([]map[string]toml.Primitive, bool) {
	switch raw := l.raw(v).(type) {
	case []map[string]any:
	case []any:
		ok := true
		for i, e := range raw {
			if _, isTable := e.(map[string]any); !isTable {
				l.typeErr(p.Index(i+1), "a table", e)
				ok = false
			}
		}
		if !ok {
			return nil, false
		}
	default:
		l.typeErr(p, fmt.Sprintf("an array of tables ([[%s]])", p[len(p)-1]), raw)
		return nil, false
	}
	var ts []map[string]toml.Primitive
	if err := l.md.PrimitiveDecode(v, &ts); err != nil {
		l.valErr(p, "%v", err)
		return nil, false
	}
	return ts, true
}

// Top level.

func (l *loader) loadName(p tomlpos.Path, v toml.Primitive) {
	if s, ok := l.str(p, v); ok {
		if strings.TrimSpace(s) == "" {
			l.valErr(p, "must not be empty (leave it out to use the file's name)")
			return
		}
		if !l.printable(p, s, "") {
			return
		}
		l.cfg.Name = s
	}
}

func (l *loader) loadDescription(p tomlpos.Path, v toml.Primitive) {
	if s, ok := l.str(p, v); ok && l.printable(p, s, "\t\n") {
		l.cfg.Description = s
	}
}

// printable reports whether s, the value at p, is free of control characters (but for
// those in allowed) and is valid UTF-8; if not, it reports the first offender. Names and
// descriptions are printed on terminals, in tables and logs: an escape sequence, a
// carriage return or a bidirectional override there would rewrite what the user sees.
func (l *loader) printable(p tomlpos.Path, s, allowed string) bool {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			l.valErr(p, "is not valid UTF-8 (at byte %d)", i)
		case unicode.IsControl(r) && !strings.ContainsRune(allowed, r),
			unicode.Is(unicode.Bidi_Control, r):
			l.valErr(p, "contains the control character %U (at byte %d): it would be printed raw on terminals and in logs", r, i)
		default:
			continue
		}
		return false
	}
	return true
}

func (l *loader) loadSeed(p tomlpos.Path, v toml.Primitive) {
	if n, ok := l.integer(p, v); ok {
		l.cfg.Seed = n
	}
}

// Target.

// MaxPorts bounds target.port's list (one iptables multiport match holds 15).
const MaxPorts = 15

// loadPorts reads target.port: a port, or a list of up to MaxPorts ports (the first is
// Target.Port, the others Target.Ports).
func (l *loader) loadPorts(p tomlpos.Path, v toml.Primitive, t *rules.Target) {
	raw := l.raw(v)
	list, isList := raw.([]any)
	if !isList {
		list = []any{raw}
	}
	if isList && (len(list) == 0 || len(list) > MaxPorts) {
		l.valErr(p, "%d ports: want 1 to %d", len(list), MaxPorts)
		return
	}
	var ports []uint16
	bad := false
	for i, e := range list {
		ep := p
		if isList {
			ep = p.Index(i + 1)
		}
		n, ok := e.(int64)
		switch {
		case !ok && isList:
			l.typeErr(ep, "an integer", e)
		case !ok:
			l.typeErr(ep, "an integer or an array of integers", e)
		case n < 1 || n > math.MaxUint16:
			l.valErr(ep, "%d is out of range: want a TCP port, 1 to 65535", n)
		case slices.Contains(ports, uint16(n)):
			l.valErr(ep, "port %d is already in the list", n)
		default:
			ports = append(ports, uint16(n))
			continue
		}
		bad = true
	}
	if bad {
		return
	}
	t.Port, t.Ports = ports[0], ports[1:]
	if len(t.Ports) == 0 {
		t.Ports = nil
	}
}

func (l *loader) loadTarget(p tomlpos.Path, v toml.Primitive) {
	tbl, ok := l.table(p, v)
	if !ok {
		l.scope = true // the type error says enough
		return
	}
	t := &l.cfg.Target
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "port":
			l.scope = true
			l.loadPorts(kp, v, t)
		case "address":
			l.scope = true
			ss, ps, ok := l.strs(kp, v)
			if !ok {
				break
			}
			for i, s := range ss {
				if pfx, err := ParsePrefix(s); err != nil {
					l.valErr(ps[i], "%v", err)
				} else {
					t.Addresses = append(t.Addresses, pfx)
				}
			}
		case "hook":
			if s, ok := l.str(kp, v); ok {
				switch h := rules.HookMode(s); h {
				case rules.HookLocal, rules.HookForward:
					t.Hook = h
				default:
					l.valErr(kp, "unknown hook %q (want local or forward)", s)
				}
			}
		case "unclassified":
			if s, ok := l.str(kp, v); ok {
				switch u := rules.Unclassified(s); u {
				case rules.UnclassifiedDrop, rules.UnclassifiedAccept:
					t.Unclassified = u
				default:
					l.valErr(kp, "unknown verdict %q for unclassified packets (want drop or accept)", s)
				}
			}
		case "queue":
			if n, ok := l.integer(kp, v); ok {
				// 0 is a valid queue number, but finproxy reads a zero Queue as "the default".
				if n < 1 || n > math.MaxUint16 {
					l.valErr(kp, "%d is out of range: want an NFQUEUE number, 1 to 65535 (0 reads as the default, %d)", n, rules.DefaultQueue)
				} else {
					t.Queue = uint16(n)
				}
			}
		default:
			if s := tomlpos.Suggest(k, targetKeys); s == "port" || s == "address" {
				l.scope = true // a misspelt scope: "no scope" would say it again
			}
			l.unknownKey(kp, k, targetKeys)
		}
	}
}

// ParsePrefix parses an address (a single-host prefix) or a prefix, as [target]
// addresses and every command's --addr take them: IPv4-mapped addresses unmapped, no
// zone, no host bits set (the error suggests the prefix meant).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid prefix %q (write it like \"198.18.2.0/24\" or \"fd00::/64\")", s)
		}
		if m := pfx.Masked(); m != pfx {
			return netip.Prefix{}, fmt.Errorf("prefix %q has host bits set (did you mean %q?)", s, m.String())
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q (write it like \"198.18.2.2\" or \"fd00::2\", or a prefix like \"198.18.2.0/24\")", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q has a zone: leave it out", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Rules.

func (l *loader) loadRules(p tomlpos.Path, v toml.Primitive) {
	tbls, ok := l.tables(p, v)
	if !ok {
		return
	}
	first := map[string]tomlpos.Path{}
	for i, t := range tbls {
		rp := p.Index(i + 1)
		r := l.loadRule(rp, t)
		if r.Name != "" {
			if fp, dup := first[r.Name]; dup {
				l.valErr(rp.Key("name"), "duplicate rule name %q (%s has it too, at line %d)",
					r.Name, fp, l.loc.At(fp).Line)
			} else {
				first[r.Name] = rp
			}
		}
		l.cfg.Rules = append(l.cfg.Rules, r)
	}
}

// ruleLoad is the state of loading one rule.
type ruleLoad struct {
	*loader
	p tomlpos.Path
	r *rules.Rule
	// given holds the rule's keys that were read without error, with their paths.
	given map[string]tomlpos.Path
	// payload as given (0 when not).
	payload int
}

func (l *loader) loadRule(p tomlpos.Path, tbl map[string]toml.Primitive) *rules.Rule {
	lc := l.loc.At(p)
	rl := &ruleLoad{
		loader: l,
		p:      p,
		r:      &rules.Rule{Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}},
		given:  map[string]tomlpos.Path{},
	}
	for _, k := range ruleKeys {
		if v, ok := tbl[k]; ok {
			rl.ruleKey(k, p.Key(k), v)
		}
	}
	if _, ok := tbl["name"]; !ok {
		l.keyErr(p, "missing name (every rule needs a unique name)")
	}
	if _, ok := tbl["action"]; !ok {
		l.keyErr(p, "missing action (one of %s)", strings.Join(l.reg.Names(), ", "))
	}
	rl.params(tbl)
	rl.crossCheck()
	return rl.r
}

func (rl *ruleLoad) ruleKey(k string, p tomlpos.Path, v toml.Primitive) {
	m := &rl.r.Match
	ok := false
	switch k {
	case "name":
		var s string
		if s, ok = rl.str(p, v); ok {
			if strings.TrimSpace(s) == "" {
				rl.valErr(p, "must not be empty")
				ok = false
			} else if !rl.printable(p, s, "") {
				ok = false
			}
			rl.r.Name = s
		}
	case "side":
		var s string
		if s, ok = rl.str(p, v); ok {
			var err error
			if m.Side, err = rules.ParseSide(s); err != nil {
				rl.valErr(p, "%v", err)
				ok = false
			}
		}
	case "server_port":
		var n int64
		if n, ok = rl.integer(p, v); ok {
			if n < 1 || n > math.MaxUint16 {
				rl.valErr(p, "%d is out of range: want a TCP port, 1 to 65535", n)
				ok = false
			} else {
				m.ServerPort = uint16(n)
			}
		}
	case "server_address":
		var s string
		if s, ok = rl.str(p, v); ok {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" || a.IsUnspecified() {
				rl.valErr(p, "%q: want the server's address, such as \"198.18.2.2\" or \"fd00::2\"", s)
				ok = false
			} else {
				m.ServerAddr = a.Unmap()
			}
		}
	case "flags":
		var s string
		if s, ok = rl.str(p, v); !ok {
			break
		}
		if strings.EqualFold(strings.TrimSpace(s), "pure-ack") {
			m.PureACK = true
			break
		}
		f, err := segment.ParseFlags(s)
		switch {
		case err != nil:
			rl.valErr(p, "%v", err)
			ok = false
		case f&(segment.ECE|segment.CWR) != 0:
			rl.valErr(p, "flags compares SYN, FIN, RST, PSH, ACK and URG only: require ECE or CWR with has_flags")
			ok = false
		default:
			m.Flags, m.FlagsSet = f, true
		}
	case "has_flags":
		var s string
		if s, ok = rl.str(p, v); !ok {
			break
		}
		if strings.EqualFold(strings.TrimSpace(s), "pure-ack") {
			rl.valErr(p, "\"pure-ack\" goes in flags, not has_flags")
			ok = false
			break
		}
		f, err := segment.ParseFlags(s)
		if err != nil {
			rl.valErr(p, "%v", err)
			ok = false
		}
		m.HasFlags = f
	case "payload":
		var s string
		if s, ok = rl.str(p, v); ok {
			switch s {
			case "none":
				m.Payload = -1
			case "some":
				m.Payload = 1
			case "any":
				m.Payload = 0
			default:
				rl.valErr(p, "unknown payload %q (want none, some or any)", s)
				ok = false
			}
			rl.payload = m.Payload
		}
	case "phase":
		var (
			ss []string
			ps []tomlpos.Path
		)
		if ss, ps, ok = rl.strs(p, v); !ok {
			break
		}
		for i, s := range ss {
			ph, err := rules.ParsePhase(s)
			if err != nil {
				rl.valErr(ps[i], "%v", err)
				ok = false
			}
			m.Phases |= ph
		}
	case "nth":
		m.Nth, ok = rl.count(p, v, "nth = 1 is the first matching segment of a connection")
	case "limit":
		m.Limit, ok = rl.count(p, v, "leave limit out for no limit")
	case "global_limit":
		m.GlobalLimit, ok = rl.count(p, v, "leave global_limit out for no limit")
	case "probability":
		var f float64
		if f, ok = rl.number(p, v); ok {
			if !(f > 0 && f <= 1) {
				rl.valErr(p, "%s is out of range: want more than 0 and at most 1",
					strconv.FormatFloat(f, 'g', -1, 64))
				ok = false
			}
			m.Probability = f
		}
	case "action":
		var s string
		if s, ok = rl.str(p, v); !ok {
			break
		}
		a, found := rl.reg.New(s)
		if !found || a == nil {
			names := rl.reg.Names()
			if sug := tomlpos.Suggest(s, names); sug != "" {
				rl.valErr(p, "unknown action %q (did you mean %s?)", s, sug)
			} else {
				rl.valErr(p, "unknown action %q (want one of %s)", s, strings.Join(names, ", "))
			}
			ok = false
			break
		}
		rl.r.ActionName, rl.r.Action = s, a
	}
	if ok {
		rl.given[k] = p
	}
}

// params decodes the keys of the rule that are not rule keys into its action's parameters,
// then validates the action.
func (rl *ruleLoad) params(tbl map[string]toml.Primitive) {
	var (
		act    = rl.r.Action
		fields map[string]param
		known  = ruleKeys
		set    = map[string]tomlpos.Path{} // parameters decoded
		failed bool
	)
	if act != nil {
		fields = rl.paramsOf(rl.r.ActionName)
		known = append(slices.Clone(ruleKeys), sortedKeys(fields)...)
	}
	for _, k := range sortedKeys(tbl) {
		if slices.Contains(ruleKeys, k) {
			continue
		}
		kp, v := rl.p.Key(k), tbl[k]
		owners := rl.owners(k)
		if act == nil {
			// Without a known action a parameter cannot be judged; anything else is wrong.
			if len(owners) == 0 {
				rl.unknownKey(kp, k, append(slices.Clone(ruleKeys), rl.allParams()...))
			}
			continue
		}
		pa, ok := fields[k]
		if !ok {
			failed = true
			if len(owners) > 0 {
				rl.keyErr(kp, "action %s has no parameter %s (%s)", rl.r.ActionName, k, ownersText(owners))
			} else {
				rl.unknownKey(kp, k, known)
			}
			continue
		}
		f := reflect.ValueOf(act).Elem().FieldByIndex(pa.index)
		switch {
		case !rl.decodeParam(kp, v, f):
			failed = true
		case pa.positive && f.IsZero():
			rl.valErr(kp, "must be more than 0 (leave %s out for its default)", k)
			failed = true
		default:
			set[k] = kp
		}
	}
	if act == nil || failed {
		return
	}
	if val, ok := act.(rules.Validator); ok {
		if err := val.Validate(); err != nil {
			rl.validateErr(err, set, sortedKeys(fields))
		}
	}
}

func ownersText(owners []string) string {
	verb := "does"
	if len(owners) > 1 {
		verb = "do"
	}
	if len(owners) <= 2 {
		return strings.Join(owners, " and ") + " " + verb
	}
	return strings.Join(owners[:len(owners)-1], ", ") + " and " + owners[len(owners)-1] + " " + verb
}

func (rl *ruleLoad) decodeParam(p tomlpos.Path, v toml.Primitive, f reflect.Value) bool {
	raw := rl.raw(v)
	if _, isText := f.Addr().Interface().(encoding.TextUnmarshaler); isText {
		if _, isStr := raw.(string); !isStr {
			rl.typeErr(p, wantType(f.Type()), raw)
			return false
		}
	}
	err := rl.md.PrimitiveDecode(v, f.Addr().Interface())
	if err == nil {
		return true
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		rl.valErr(p, "%s", pe.Message)
	} else {
		rl.typeErr(p, wantType(f.Type()), raw)
	}
	return false
}

// wantType names, for messages, the TOML type a parameter field reads.
func wantType(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[rules.Duration]() || t == reflect.TypeFor[time.Duration]():
		return "a duration string (such as \"250ms\")"
	case reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()):
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "a table"
	}
	return "a " + t.String()
}

// validateErr reports an error from an action's Validate at the parameter it names: the one
// given by a Param() string method, or else the parameter the message names first, given
// ones first. A parameter that is not given is reported at the rule's header.
func (rl *ruleLoad) validateErr(err error, given map[string]tomlpos.Path, params []string) {
	msg := err.Error()
	param := ""
	var pe interface {
		error
		Param() string
	}
	if errors.As(err, &pe) {
		param = pe.Param()
	} else {
		param = firstWord(msg, sortedKeys(given))
		if param == "" {
			param = firstWord(msg, params)
		}
	}
	if param == "" {
		rl.keyErr(rl.p, "%s", msg)
		return
	}
	msg = strings.TrimPrefix(msg, param+": ")
	if p, ok := given[param]; ok {
		rl.valErr(p, "%s", msg)
	} else {
		rl.errAt(rl.loc.At(rl.p), rl.p.Key(param), "%s", msg)
	}
}

// firstWord returns the word of words that occurs first in s (the longest at one place), or "".
func firstWord(s string, words []string) string {
	best, at := "", len(s)+1
	for _, w := range words {
		if i := wordIndex(s, w); i >= 0 && (i < at || i == at && len(w) > len(best)) {
			best, at = w, i
		}
	}
	return best
}

// wordIndex is the index of the first occurrence of word in s that is not part of a longer
// key name, or -1.
func wordIndex(s, word string) int {
	for off := 0; off <= len(s); {
		i := strings.Index(s[off:], word)
		if i < 0 {
			return -1
		}
		i += off
		end := i + len(word)
		if (i == 0 || !tomlpos.IsBareKeyByte(s[i-1])) && (end == len(s) || !tomlpos.IsBareKeyByte(s[end])) {
			return i
		}
		off = i + 1
	}
	return -1
}

// crossCheck reports rules whose keys contradict one another, so that they could never match.
func (rl *ruleLoad) crossCheck() {
	m := &rl.r.Match
	const compared = segment.SYN | segment.FIN | segment.RST | segment.PSH | segment.ACK | segment.URG
	hp, hasGiven := rl.given["has_flags"]
	_, flagsGiven := rl.given["flags"]
	if hasGiven && flagsGiven {
		switch {
		case m.FlagsSet && m.HasFlags&compared&^m.Flags != 0:
			rl.valErr(hp, "%s is not in flags %s: the rule can never match", m.HasFlags&compared&^m.Flags, m.Flags)
		case m.PureACK && m.HasFlags&(segment.SYN|segment.FIN|segment.RST) != 0:
			rl.valErr(hp, "%s contradicts flags = \"pure-ack\": the rule can never match",
				m.HasFlags&(segment.SYN|segment.FIN|segment.RST))
		}
	}
	if pp, ok := rl.given["payload"]; ok && m.PureACK && rl.payload > 0 {
		rl.valErr(pp, "\"some\" contradicts flags = \"pure-ack\" (which carries no payload): the rule can never match")
	}
	pp, ok := rl.given["phase"]
	if !ok {
		return
	}
	ph := m.Phases
	switch {
	case ph&rules.PhaseEstablished != 0 && ph&^rules.PhaseEstablished != 0:
		rl.valErr(pp, "established cannot hold with %s: the rule can never match", ph&^rules.PhaseEstablished)
	case ph&rules.PhaseAckOfClientFIN != 0 && ph&rules.PhaseAckOfServerFIN != 0:
		rl.valErr(pp, "a segment acknowledges the client's FIN when sent by the server and the server's when sent by the client, not both: the rule can never match")
	case ph&rules.PhaseAckOfClientFIN != 0 && m.Side == rules.Client:
		rl.valErr(pp, "ack-of-client-fin is about segments from the server, but side is client: the rule can never match")
	case ph&rules.PhaseAckOfServerFIN != 0 && m.Side == rules.Server:
		rl.valErr(pp, "ack-of-server-fin is about segments from the client, but side is server: the rule can never match")
	}
}

// paramsOf returns the parameters of the named action: the exported fields of its struct,
// named by their toml tag (or the field's name when untagged), with their index and options.
func (l *loader) paramsOf(action string) map[string]param {
	if l.params == nil {
		l.params = map[string]map[string]param{}
		for _, name := range l.reg.Names() {
			fields := map[string]param{}
			if a, ok := l.reg.New(name); ok && a != nil {
				if v := reflect.ValueOf(a); v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
					collectParams(v.Elem(), nil, fields)
				}
			}
			l.params[name] = fields
		}
	}
	return l.params[action]
}

func collectParams(v reflect.Value, index []int, out map[string]param) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		idx := append(index[:len(index):len(index)], i)
		name, opts, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			collectParams(v.Field(i), idx, out)
			continue
		}
		if !f.IsExported() || !v.Field(i).CanSet() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := out[name]; !dup {
			out[name] = param{index: idx, positive: slices.Contains(strings.Split(opts, ","), "positive")}
		}
	}
}

// owners lists the registered actions that take parameter k.
func (l *loader) owners(k string) []string {
	var names []string
	for _, name := range l.reg.Names() {
		if _, ok := l.paramsOf(name)[k]; ok {
			names = append(names, name)
		}
	}
	return names
}

// allParams lists the parameters of all registered actions.
func (l *loader) allParams() []string {
	var all []string
	for _, name := range l.reg.Names() {
		for k := range l.paramsOf(name) {
			if !slices.Contains(all, k) {
				all = append(all, k)
			}
		}
	}
	slices.Sort(all)
	return all
}
