package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/finproxy/finproxy/rules"
)

// Lab is the [lab] section of a config: the real applications a scenario runs against, in
// a client, a router and a server network namespace, and how to run them.
type Lab struct {
	// Server and Client are the applications' argv, with their placeholders not yet
	// expanded (see ExpandArg). A command written as a string was split into words as a
	// shell would split it (quotes and backslashes honoured), but no shell runs it.
	Server []string
	Client []string
	// Ready is the text the server prints (stdout or stderr) once it listens.
	Ready string
	// Family is the address family {server_addr} and {client_addr} expand to.
	Family Family
	// Timeout bounds one run; Settle is the quiet time after both applications are done
	// before the run ends.
	Timeout time.Duration
	Settle  time.Duration
	// ServerLifetime is how long one server process serves: ServerPerRun (started and
	// stopped for each run) or ServerPerLab (started once, before the first run, and
	// stopped after the last: for daemons that take seconds to start).
	ServerLifetime ServerLifetime
	// StopGrace is how long an application the lab stops (a server still running when
	// the scenario is over, a client past the run's timeout) has between SIGTERM and
	// SIGKILL to its process group.
	StopGrace time.Duration
	// Apps are other applications the scenario works with, by name ([lab.apps.socat]):
	// `finproxy lab --apps NAME` runs them instead of Server, Client and Ready.
	Apps map[string]*LabApps
	// Sysctls are set in the lab's namespaces before the applications start: role
	// ("client", "router", "server") -> key ("net.ipv4.tcp_fin_timeout") -> value.
	// Nil when none are given.
	Sysctls map[string]map[string]string
	// Pos is where the [lab] table starts.
	Pos rules.Position
}

// LabOverrides are the settings a command puts in place of [lab]'s (lab's --server,
// --client, --ready, --apps, --server-lifetime and --stop-grace; sweep's applications): a
// zero field keeps the config's. Lab.With applies them.
type LabOverrides struct {
	Server, Client []string
	Ready          string
	ServerLifetime ServerLifetime
	StopGrace      time.Duration
}

// With returns the lab settings with o's in place of l's, and the defaults of server
// lifetime and stop grace where neither gives one.
func (l Lab) With(o LabOverrides) Lab {
	if len(o.Server) > 0 {
		l.Server = o.Server
	}
	if len(o.Client) > 0 {
		l.Client = o.Client
	}
	if o.Ready != "" {
		l.Ready = o.Ready
	}
	if o.ServerLifetime != "" {
		l.ServerLifetime = o.ServerLifetime
	}
	if l.ServerLifetime == "" {
		l.ServerLifetime = DefaultLabLifetime
	}
	if o.StopGrace > 0 {
		l.StopGrace = o.StopGrace
	}
	if l.StopGrace <= 0 {
		l.StopGrace = DefaultStopGrace
	}
	return l
}

// LabApps are a server, a client and the server's ready text that may replace the [lab]
// ones.
type LabApps struct {
	Server, Client []string
	Ready          string
	Pos            rules.Position
}

// Family is an address family of the lab.
type Family string

// Families.
const (
	FamilyIPv4 Family = "ipv4"
	FamilyIPv6 Family = "ipv6"
)

// ServerLifetime is [lab] server_lifetime.
type ServerLifetime string

// Server lifetimes.
const (
	ServerPerRun ServerLifetime = "run"
	ServerPerLab ServerLifetime = "lab"
)

// ParseServerLifetime checks a server lifetime given on the command line.
func ParseServerLifetime(s string) (ServerLifetime, error) {
	switch l := ServerLifetime(s); l {
	case ServerPerRun, ServerPerLab:
		return l, nil
	}
	return "", fmt.Errorf("unknown server lifetime %q (want %q: a server per run, or %q: one server for all runs)", s, ServerPerRun, ServerPerLab)
}

// Defaults of [lab].
const (
	DefaultReady       = "ready"
	DefaultLabTimeout  = 20 * time.Second
	DefaultLabSettle   = 800 * time.Millisecond
	DefaultLabFamily   = FamilyIPv4
	DefaultLabLifetime = ServerPerRun
	DefaultStopGrace   = 5 * time.Second
	maxStopGrace       = time.Minute
	placeholderPattern = `\{[A-Za-z_][A-Za-z0-9_]*\}`
)

// Placeholders are the names a lab command may use, written {name}:
//
//	{server_addr}  the server's address in the lab (of Lab.Family)
//	{client_addr}  the client's address in the lab
//	{port}         the server's TCP port
//	{finproxy}     the finproxy executable (for its built-in applications)
//
// Any other {name} (letters, digits and underscores in braces) is a config error; other
// braces are kept as written ("{}", "{ print }"). An IPv6 address is not bracketed: write
// "[{server_addr}]:{port}" where a program wants host:port.
var Placeholders = []string{"server_addr", "client_addr", "port", "finproxy"}

// LabRoles are the namespaces of a lab, the roles [lab.sysctl] takes.
var LabRoles = []string{"client", "router", "server"}

// labKeys are the keys of [lab].
var labKeys = []string{"server", "client", "ready", "family", "timeout", "settle", "server_lifetime", "stop_grace", "apps", "sysctl"}

// labAppsKeys are the keys of [lab.apps.NAME].
var labAppsKeys = []string{"server", "client", "ready"}

// appsName is the shape of a name of [lab.apps].
var appsName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

var placeholderRE = regexp.MustCompile(placeholderPattern)

func (l *loader) loadLab(p tomlpos.Path, v toml.Primitive) {
	tbl, ok := l.table(p, v)
	if !ok {
		return
	}
	lc := l.loc.At(p)
	lab := &Lab{
		Ready:          DefaultReady,
		Family:         DefaultLabFamily,
		Timeout:        DefaultLabTimeout,
		Settle:         DefaultLabSettle,
		ServerLifetime: DefaultLabLifetime,
		StopGrace:      DefaultStopGrace,
		Pos:            rules.Position{File: l.file, Line: lc.Line, Col: lc.Col},
	}
	l.cfg.Lab = lab
	var timeoutOK, settleOK bool
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		switch k {
		case "server":
			lab.Server = l.command(kp, v)
		case "client":
			lab.Client = l.command(kp, v)
		case "ready":
			if s, ok := l.str(kp, v); ok {
				if s == "" {
					l.valErr(kp, "must not be empty (leave it out for %q)", DefaultReady)
				} else {
					lab.Ready = s
				}
			}
		case "family":
			if s, ok := l.str(kp, v); ok {
				switch f := Family(s); f {
				case FamilyIPv4, FamilyIPv6:
					lab.Family = f
				default:
					l.valErr(kp, "unknown family %q (want ipv4 or ipv6)", s)
				}
			}
		case "timeout":
			if d, ok := l.duration(kp, v); ok {
				if d == 0 {
					l.valErr(kp, "must be more than 0 (leave it out for %s)", DefaultLabTimeout)
				} else {
					lab.Timeout, timeoutOK = d, true
				}
			}
		case "settle":
			if d, ok := l.duration(kp, v); ok {
				if d == 0 {
					l.valErr(kp, "must be more than 0: a retransmission timer needs time to fire (leave it out for %s)", DefaultLabSettle)
				} else {
					lab.Settle, settleOK = d, true
				}
			}
		case "server_lifetime":
			if s, ok := l.str(kp, v); ok {
				if lt, err := ParseServerLifetime(s); err != nil {
					l.valErr(kp, "%v", err)
				} else {
					lab.ServerLifetime = lt
				}
			}
		case "stop_grace":
			if d, ok := l.duration(kp, v); ok {
				if d == 0 || d > maxStopGrace {
					l.valErr(kp, "%s is out of range: want more than 0 and at most %s (leave it out for %s)", d, maxStopGrace, DefaultStopGrace)
				} else {
					lab.StopGrace = d
				}
			}
		case "apps":
			lab.Apps = l.labApps(kp, v)
		case "sysctl":
			lab.Sysctls = l.sysctls(kp, v)
		default:
			l.unknownKey(kp, k, labKeys)
		}
	}
	for _, k := range []string{"server", "client"} {
		if _, ok := tbl[k]; !ok {
			l.keyErr(p, "missing %s (the %s program's command, such as %s)", k, k, exampleCommand[k])
		}
	}
	if (timeoutOK || settleOK) && lab.Settle >= lab.Timeout {
		at := p.Key("settle")
		if !settleOK {
			at = p.Key("timeout")
		}
		l.valErr(at, "settle (%s) must be shorter than timeout (%s): every run would time out", lab.Settle, lab.Timeout)
	}
}

// labApps reads [lab.apps]: a table per name, each with a server and a client command
// and, optionally, the server's ready text.
func (l *loader) labApps(p tomlpos.Path, v toml.Primitive) map[string]*LabApps {
	tbl, ok := l.table(p, v)
	if !ok {
		return nil
	}
	out := map[string]*LabApps{}
	for _, name := range sortedKeys(tbl) {
		np := p.Key(name)
		if !appsName.MatchString(name) {
			l.keyErr(np, "%q: name the applications with lower-case letters, digits and dashes (such as socat)", name)
			continue
		}
		at, ok := l.table(np, tbl[name])
		if !ok {
			continue
		}
		lc := l.loc.At(np)
		a := &LabApps{Ready: DefaultReady, Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
		for _, k := range sortedKeys(at) {
			kp := np.Key(k)
			switch k {
			case "server":
				a.Server = l.command(kp, at[k])
			case "client":
				a.Client = l.command(kp, at[k])
			case "ready":
				if s, ok := l.str(kp, at[k]); ok {
					if s == "" {
						l.valErr(kp, "must not be empty (leave it out for %q)", DefaultReady)
					} else {
						a.Ready = s
					}
				}
			default:
				l.unknownKey(kp, k, labAppsKeys)
			}
		}
		for _, k := range []string{"server", "client"} {
			if _, ok := at[k]; !ok {
				l.keyErr(np, "missing %s (the %s program's command)", k, k)
			}
		}
		out[name] = a
	}
	return out
}

var exampleCommand = map[string]string{
	"server": `"{finproxy} app server --listen {server_addr}:{port}"`,
	"client": `["socat", "-", "TCP:{server_addr}:{port}"]`,
}

// duration reads a duration string such as "250ms".
func (l *loader) duration(p tomlpos.Path, v toml.Primitive) (time.Duration, bool) {
	raw := l.raw(v)
	s, ok := raw.(string)
	if !ok {
		l.typeErr(p, wantType(reflect.TypeFor[rules.Duration]()), raw)
		return 0, false
	}
	var d rules.Duration
	if err := d.UnmarshalText([]byte(s)); err != nil {
		l.valErr(p, "%v", err)
		return 0, false
	}
	return time.Duration(d), true
}

// command reads a command: a string split into words, or an array of strings (argv).
func (l *loader) command(p tomlpos.Path, v toml.Primitive) []string {
	var (
		argv []string
		at   []tomlpos.Path // where each word is written
	)
	switch raw := l.raw(v).(type) {
	case string:
		words, err := SplitCommand(raw)
		if err != nil {
			l.valErr(p, "%v", err)
			return nil
		}
		if len(words) == 0 {
			l.valErr(p, "empty command")
			return nil
		}
		argv = words
		for range words {
			at = append(at, p)
		}
	case []any:
		if len(raw) == 0 {
			l.valErr(p, "empty command")
			return nil
		}
		var ok bool
		argv, at, ok = l.strArray(p, raw)
		if s, isStr := raw[0].(string); isStr && s == "" {
			l.valErr(at[0], "empty program name")
			ok = false
		}
		if !ok {
			l.placeholders(argv, at)
			return nil
		}
	default:
		l.typeErr(p, "a string or an array of strings (argv)", raw)
		return nil
	}
	if !l.placeholders(argv, at) {
		return nil
	}
	return argv
}

// placeholders reports the unknown placeholders of argv, whose words are written at at.
func (l *loader) placeholders(argv []string, at []tomlpos.Path) bool {
	ok := true
	for i, w := range argv {
		for _, ph := range placeholderRE.FindAllString(w, -1) {
			name := ph[1 : len(ph)-1]
			if slices.Contains(Placeholders, name) {
				continue
			}
			ok = false
			if s := tomlpos.Suggest(name, Placeholders); s != "" {
				l.valErr(at[i], "unknown placeholder %s (did you mean {%s}?)", ph, s)
			} else {
				l.valErr(at[i], "unknown placeholder %s (known: {%s})", ph, strings.Join(Placeholders, "}, {"))
			}
		}
	}
	return ok
}

// shellOnly are characters that mean something only to a shell, which finproxy does not run.
const shellOnly = "|&;<>()`$"

// SplitCommand splits s into words as a POSIX shell does, without any expansion: words are
// separated by unquoted blanks; '...' keeps everything literally; "..." keeps everything
// but \ before " \ $ ` and newline; an unquoted \ keeps the next character. An unquoted
// character of shellOnly is an error: the command would need a shell.
func SplitCommand(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			in = true
			closed := false
			for i++; i < len(s); i++ {
				c := s[i]
				if c == '"' {
					closed = true
					break
				}
				if c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
					if s[i] != '\n' {
						cur.WriteByte(s[i])
					}
					continue
				}
				cur.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf(`unterminated " quote`)
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf(`trailing \ escapes nothing`)
			}
			i++
			if s[i] != '\n' {
				cur.WriteByte(s[i])
				in = true
			}
		case strings.IndexByte(shellOnly, c) >= 0:
			return nil, fmt.Errorf("%q needs a shell, and finproxy runs the command without one: quote it, or write [\"sh\", \"-c\", \"...\"]", c)
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// sysctlKeyRE is the form of a sysctl key finproxy sets: a per-namespace net.* key, with
// dots or, as sysctl(8) also allows, slashes.
var sysctlKeyRE = regexp.MustCompile(`^net[./][A-Za-z0-9_./:-]+$`)

// sysctls reads [lab.sysctl]: role -> key -> value. A key written unquoted (net.ipv4.x = 1)
// is a dotted key, a nest of tables in TOML: it reads as the quoted key would.
func (l *loader) sysctls(p tomlpos.Path, v toml.Primitive) map[string]map[string]string {
	roles, ok := l.raw(v).(map[string]any)
	if !ok {
		l.typeErr(p, "a table (role -> sysctl key -> value)", l.raw(v))
		return nil
	}
	out := map[string]map[string]string{}
	for _, role := range sortedKeys(roles) {
		rp := p.Key(role)
		if !slices.Contains(LabRoles, role) {
			if s := tomlpos.Suggest(role, LabRoles); s != "" {
				l.keyErr(rp, "unknown role %q (did you mean %s?)", role, s)
			} else {
				l.keyErr(rp, "unknown role %q (want client, router or server)", role)
			}
			continue
		}
		keys, ok := roles[role].(map[string]any)
		if !ok {
			l.typeErr(rp, `a table of sysctls, such as "net.ipv4.tcp_fin_timeout" = 3`, roles[role])
			continue
		}
		m := map[string]string{}
		written := map[string]tomlpos.Path{}
		l.sysctlTable(rp, "", keys, m, written)
		if len(m) > 0 {
			out[role] = m
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sysctlTable reads the sysctls of one role; prefix is the dotted key of a nested table.
func (l *loader) sysctlTable(p tomlpos.Path, prefix string, tbl map[string]any, out map[string]string, written map[string]tomlpos.Path) {
	for _, k := range sortedKeys(tbl) {
		kp, v := p.Key(k), tbl[k]
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			l.sysctlTable(kp, key, sub, out, written)
			continue
		}
		if !sysctlKeyRE.MatchString(key) || strings.Contains(key, "..") || strings.Contains(key, "//") {
			l.keyErr(kp, "only net.* keys can be set (they belong to the lab's namespace; others would change the host)")
			continue
		}
		var val string
		switch x := v.(type) {
		case string:
			val = x
		case int64:
			val = strconv.FormatInt(x, 10)
		default:
			l.typeErr(kp, "a string or an integer", v)
			continue
		}
		norm := strings.ReplaceAll(key, "/", ".")
		if first, dup := written[norm]; dup {
			// Report the one written later.
			a, b := l.loc.At(first), l.loc.At(kp)
			if b.Line < a.Line || b.Line == a.Line && b.Col < a.Col {
				kp, a = first, b
			}
			l.keyErr(kp, "sysctl %s is set twice (also at line %d)", norm, a.Line)
			continue
		}
		written[norm] = kp
		out[key] = val
	}
}
