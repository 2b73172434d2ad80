package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/finproxy/finproxy/rules"
)

// ConfigError is one problem in a config file.
type ConfigError struct {
	// Pos is where the problem is: the offending value, or the key when the key itself is
	// wrong, or the enclosing table's header when something is missing.
	Pos rules.Position
	// Key is the key path, such as "rule[2].delay" or "target.port"; "" when the problem
	// is the file's syntax.
	Key string
	Msg string
}

func (e *ConfigError) Error() string {
	pos := e.Pos
	if pos.File == "" {
		pos.File = "<config>"
	}
	if e.Key == "" {
		return pos.String() + ": " + e.Msg
	}
	return pos.String() + ": " + e.Key + ": " + e.Msg
}

// ConfigErrors are all the problems found in a config file, sorted by position.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the errors one by one, for errors.As and errors.Is.
func (es ConfigErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func (es ConfigErrors) sort() {
	slices.SortStableFunc(es, func(a, b *ConfigError) int {
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line - b.Pos.Line
		}
		if a.Pos.Col != b.Pos.Col {
			return a.Pos.Col - b.Pos.Col
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// Config is a loaded, validated scenario file: what the engine runs (rules.Config: the
// scope and the rules) and the sections about a run against real applications.
type Config struct {
	rules.Config
	// Lab is the [lab] section: the applications to run the scenario against (nil when
	// absent).
	Lab *Lab
	// Expect is the [expect] section: what must be observed (nil when absent).
	Expect *Expect
}

// Load reads and parses the config file at path. Problems in the file are reported as
// ConfigErrors, all at once.
//
// A scenario is a TOML file. Every key below is optional unless marked required; a key
// finproxy does not know, a value of the wrong type and a value out of range are all
// errors, reported together with file:line:col and the key's path (rule[2].delay: rules
// and array elements are numbered from 1 in the order they appear).
//
//	name = "lost-final-ack"          # defaults to the file's base name without extension
//	description = "..."
//	seed = 42                        # makes probability reproducible
//
//	[target]                         # required: at least a port or an address
//	port = 8080                      # server TCP port, 1-65535
//	address = ["198.18.2.2", "fd00::2/128"]   # server side: a string or a list;
//	                                 # addresses or prefixes (no host bits set)
//	hook = "forward"                 # "local" (default) or "forward"
//	queue = 7400                     # NFQUEUE number, 1-65535 (default 7400)
//	unclassified = "drop"            # verdict for queued packets that are no readable TCP
//	                                 # segment (fragments, malformed): "drop" (default) or "accept"
//
//	[[rule]]                         # any number of rules; the first that matches acts
//	name = "drop-final-ack"          # required, unique
//	side = "client"                  # sender of the segment: client | server | any (default)
//	server_port = 6379               # the connection's server port (one of the target's)
//	server_address = "198.18.2.2"    # the connection's server address
//	flags = "ACK"                    # exact set over SYN, FIN, RST, PSH, ACK, URG, joined by
//	                                 # '|', '+' or ',' ("FIN|ACK"; "none" for no flags);
//	                                 # or "pure-ack": ACK without SYN, FIN, RST or payload
//	has_flags = "FIN"                # these must be set, others may be too
//	payload = "none"                 # "none" | "some" | "any" (default)
//	phase = "ack-of-server-fin"      # a phase or a list of phases, all must hold:
//	                                 # handshake, established, after-client-fin,
//	                                 # after-server-fin, after-both-fins,
//	                                 # ack-of-client-fin, ack-of-server-fin
//	nth = 1                          # only the nth matching segment per connection (from 1)
//	probability = 0.5                # in (0, 1]
//	limit = 1                        # act at most this often per connection (>= 1)
//	global_limit = 10                # and over the whole run (>= 1)
//	action = "drop"                  # required: pass, drop, delay, hold, merge, ...
//
// An action's parameters are keys of the rule's table too. A key that is neither a rule
// key above nor a parameter of the rule's action is an error, even when another action
// takes it:
//
//	delay:  delay = "200ms", jitter = "50ms"      # delay required
//	hold:   until = "peer-fin"                     # required: peer-fin, own-fin,
//	                                               # client-fin, server-fin, both-fins
//	        timeout = "2s"                         # required
//	        on_timeout = "pass"                    # or "drop"; default pass
//	merge:  timeout = "1s"                         # default 1s
//	merge-data-fin: timeout = "100ms"              # default 100ms
//	split:  fin = "inject", delay = "100ms"        # or fin = "retransmit" (no delay)
//	inject-rst: toward = "client"                  # required: client, server or both
//	        segment = "pass"                       # or "drop": the matched segment
//	        delay = "500ms"                        # RSTs made and sent that much later
//	stall:  reset = "1s"                           # the side's data dropped; RSTs after
//	                                               # that long without new data (0: never)
//	cut:    bytes = 1000                           # the side's data cut there, then RSTs
//	pace:   rate = 100000                          # required: bytes per second
//	        queue = "200ms"                        # the longest wait; longer: dropped
//	duplicate: delay = "0s", copies = 1
//	replay: after = "next-incarnation"             # or "close"
//	        delay = "20ms", original = "pass", timeout = "30s"   # original: or "drop"
//	reuse-tuple: max_age = "60s"
//
// Two optional sections describe a run against real applications and what it must show
// (see Lab and Expect for the meaning of each key):
//
//	[lab]
//	server = "{finproxy} app server --listen {server_addr}:{port}"  # required; a string
//	client = ["socat", "-", "TCP:{server_addr}:{port}"]  # (split like a shell, none runs
//	                                 # it) or an argv list; placeholders {server_addr},
//	                                 # {client_addr}, {port}, {finproxy}
//	ready = "ready"                  # what the server prints once it listens (default)
//	family = "ipv4"                  # or "ipv6": the addresses the placeholders give
//	timeout = "20s"                  # bounds one run (default 20s)
//	settle = "800ms"                 # quiet time after both are done (default 800ms)
//	[lab.sysctl.client]              # per namespace: client, router, server
//	"net.ipv4.tcp_max_tw_buckets" = 0    # net.* keys only; a string or an integer
//
//	[expect]
//	leak_threshold = "1s"            # for close_wait_leak (default 1s)
//	[expect.client]                  # and [expect.server]; states are the kernel's names
//	states = ["FIN_WAIT1", "TIME_WAIT"]  # entered in this order (others may come between)
//	absent = ["CLOSING"]             # never entered
//	retransmits_in = ["FIN_WAIT1"]   # at least one retransmission in each
//	no_retransmits = true            # none at all
//	resets_sent = true               # true: at least one; false: none
//	resets_received = false
//	max_dwell = { FIN_WAIT2 = "10ms" }   # no longer than this in the state, if entered
//	min_dwell = { CLOSE_WAIT = "1s" }    # entered, and at least this long
//	close_wait_leak = true           # reported as a CLOSE_WAIT leak (true) or not (false)
//	exit = 0                         # the application's exit code, 0-255
//	[[expect.segment]]               # a count of event log records
//	side = "client"                  # side, flags, has_flags, payload: as in a rule
//	has_flags = "FIN"
//	verdict = "drop"                 # accept | drop
//	rule = "drop-first-client-fin"   # a rule of this config acted on it
//	injected = true                  # only segments finproxy made (false: only queued ones)
//	modified = true                  # only segments that left rewritten (false: unchanged)
//	min = 2                          # bounds, 0 or more; without either: min = 1
//	max = 2
//
// Durations are strings such as "250ms" or "2s", at most MaxDuration (1h). A parameter
// whose default stands for "not given" (merge's timeout, duplicate's copies, ...) must be
// more than 0 when it is given. Names (the scenario's, the rules') must not contain
// control characters (they are printed in tables and logs); nor may the description,
// but for tabs and newlines.
//
// The file must be a regular file of at most MaxConfigSize bytes (ReadFile), nested at
// most MaxDepth levels deep.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// MaxConfigSize bounds a config. A scenario is a few kilobytes (the largest preset is under
// 5 KB, comments included); the TOML parser needs about 10 µs and 2.5 KB per key, so that a
// 1 MiB file of small keys cost it 1.5 s and 260 MB (nested ones more), and 64 KiB nested as
// deep as MaxDepth allows 0.2 s and 55 MB. The bound also keeps a wrong path (a log file, a
// disk image) from costing the machine its memory.
const MaxConfigSize = 64 << 10

// MaxDepth bounds how deep a config nests: the number of pieces of the longest key path
// (rule[2].delay is 3 deep). It is checked before the TOML parser runs (tomlpos.MaxDepth).
const MaxDepth = tomlpos.MaxDepth

// ReadFile reads the config file at path: a regular file (a symbolic link to one will do)
// of at most MaxConfigSize bytes. Anything else is refused at once, without reading: a
// FIFO (whose open would wait for a writer), a device such as /dev/zero (which never
// ends), a directory, a socket.
func ReadFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO does not wait for a writer, so that it can be refused.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: %s, not a regular file: give a config file (or -, where a command takes it, to read the config from stdin)", path, fileKind(fi.Mode()))
	}
	if fi.Size() > MaxConfigSize {
		return nil, fmt.Errorf("config %s: %d bytes: a config file is at most %s", path, fi.Size(), sizeText(MaxConfigSize))
	}
	return Read(f, path)
}

// Read reads a config from r (stdin, for example), at most MaxConfigSize bytes: it stops
// reading after that, with an error. name names r in the error.
func Read(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("config %s: more than %s, the most a config may be", name, sizeText(MaxConfigSize))
	}
	return data, nil
}

// fileKind names what a file that is not a regular file is.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

// sizeText writes a size in bytes in the largest binary unit that divides it.
func sizeText(n int) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Parse parses and checks a config. file names it in positions and error messages and
// gives the config its default name; it may be "". The error, if any, is a ConfigErrors
// listing every problem found, sorted by position (a syntax error stops the parse: it
// is then the only one).
func Parse(data []byte, file string) (*Config, error) {
	return ParseWith(data, file, rules.DefaultRegistry())
}

// ParseWith is Parse with the actions of reg (a test's Clone of DefaultRegistry).
func ParseWith(data []byte, file string, reg *rules.Registry) (*Config, error) {
	cfg, errs := parse(data, file, reg)
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return cfg, nil
}
