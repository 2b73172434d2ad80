package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is where finproxy serve listens unless told otherwise (Toxiproxy's port).
const DefaultAddr = "127.0.0.1:8474"

// RuleSet is the rule set in place.
type RuleSet struct {
	Name string `json:"name"`
	// Source is the rule set as TOML: what was loaded (a JSON rule set is kept as the
	// TOML it was turned into).
	Source string `json:"source"`
	Target Target `json:"target"`
	Rules  []Rule `json:"rules"`
	// Queued says which segments the rules need queued: control, from-fin or all.
	Queued string `json:"queued"`
	// Hooked says which segments the hooks in place queue ("" without hooks): at least
	// Queued, more when an earlier rule set on the same target needed more (the hooks do
	// not narrow while finproxy serve runs, so that no segment passes unseen in between).
	Hooked string `json:"hooked"`
	// Replacements counts the rule sets put in place since finproxy serve started.
	Replacements uint64 `json:"replacements"`
}

// Target is the scope of the hooks.
type Target struct {
	Port uint16 `json:"port,omitempty"`
	// Ports are the further server ports of a target of several (Toxiproxy proxies).
	Ports     []uint16 `json:"ports,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Hook      string   `json:"hook"`
	Queue     uint16   `json:"queue"`
}

// Rule is one rule of the set; a disabled rule stays in the set but does not act.
type Rule struct {
	Name    string `json:"name"`
	Action  string `json:"action"`
	Enabled bool   `json:"enabled"`
}

// Counters are what finproxy did since it started.
type Counters struct {
	// Rules are counted by name since finproxy serve started, across replacements.
	Rules       []RuleCounters `json:"rules"`
	Queue       QueueCounters  `json:"queue"`
	Undecodable uint64         `json:"undecodable"`
}

// RuleCounters are what one rule did.
type RuleCounters struct {
	Rule     string `json:"rule"`
	Matched  uint64 `json:"matched"`
	Passed   uint64 `json:"passed"`
	Dropped  uint64 `json:"dropped"`
	Delayed  uint64 `json:"delayed"`
	Held     uint64 `json:"held"`
	Merged   uint64 `json:"merged"`
	Modified uint64 `json:"modified"`
	Injected uint64 `json:"injected"`
	// Panicked counts the times the rule's action panicked (the segment passed
	// untouched): nonzero is a bug in finproxy.
	Panicked uint64 `json:"panicked,omitempty"`
}

// QueueCounters are the queue's health: segments queued and given a verdict, and the
// losses (KernelDropped: the queue was full; UserDropped: the socket buffer was).
type QueueCounters struct {
	Received      uint64 `json:"received"`
	Verdicts      uint64 `json:"verdicts"`
	ENOBUFS       uint64 `json:"enobufs"`
	VerdictErrors uint64 `json:"verdict_errors"`
	KernelDropped uint64 `json:"kernel_dropped"`
	UserDropped   uint64 `json:"user_dropped"`
	Waiting       uint64 `json:"waiting"`
}

// Event is one segment and its verdict, as in the event log (`finproxy run --log`).
type Event struct {
	TimeNS        int64  `json:"time_ns"`
	VerdictTimeNS int64  `json:"verdict_time_ns"`
	Client        string `json:"client"`
	Server        string `json:"server"`
	Incarnation   int    `json:"incarnation,omitempty"`
	Side          string `json:"side"`
	Flags         string `json:"flags"`
	Seq           uint32 `json:"seq"`
	Ack           uint32 `json:"ack"`
	Len           int    `json:"len"`
	Rule          string `json:"rule,omitempty"`
	Action        string `json:"action,omitempty"`
	Verdict       string `json:"verdict"`
	HeldNS        int64  `json:"held_ns"`
	Modified      bool   `json:"modified,omitempty"`
	Injected      bool   `json:"injected,omitempty"`
}

// Connections are the connections serve's Observer saw on the current target, with
// their timelines (GET /v1/connections), in the shapes of the lab's report.json.
type Connections struct {
	Connections []Connection `json:"connections"`
	Warnings    []string     `json:"warnings,omitempty"`
}

// Connection is one incarnation of a 4-tuple.
type Connection struct {
	Incarnation int      `json:"incarnation"`
	Client      ConnSide `json:"client"`
	Server      ConnSide `json:"server"`
}

// ConnSide is one side of a connection: its states in order (kernel names, TIME_WAIT
// included) with their times, its retransmissions and resets, and the segments it sent
// that finproxy saw.
type ConnSide struct {
	Addr           string       `json:"addr"`
	States         []string     `json:"states"`
	Timeline       []StateEntry `json:"timeline"`
	Retransmits    []StateAt    `json:"retransmits"`
	ResetsSent     []StateAt    `json:"resets_sent"`
	ResetsReceived []StateAt    `json:"resets_received"`
	Segments       []Segment    `json:"segments"`
}

// StateEntry is one state of a side: when it began, how long it lasted (Dwell, as
// time.Duration prints it; until now when Ongoing), and which source saw it.
type StateEntry struct {
	State   string    `json:"state"`
	At      time.Time `json:"at"`
	Dwell   string    `json:"dwell"`
	Ongoing bool      `json:"ongoing,omitempty"`
	Source  string    `json:"source"`
}

// StateAt is a retransmission or a reset, and the state it happened in.
type StateAt struct {
	State  string    `json:"state,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Segment is a segment a side sent, as finproxy's event log has it.
type Segment struct {
	From    string `json:"from"`
	Flags   string `json:"flags"`
	Seq     uint32 `json:"seq"`
	Ack     uint32 `json:"ack"`
	Len     int    `json:"len"`
	Verdict string `json:"verdict"`
	Rule    string `json:"rule"`
	TimeNS  int64  `json:"time_ns"`
	HeldNS  int64  `json:"held_ns"`
}

// StateChange is an event of the Observer on the event stream: a socket at Src (its
// peer Dst) went from Old to New ("state"); or a retransmission ("retransmit": State) or
// a reset ("reset") by or to it.
type StateChange struct {
	Type   string    `json:"type"` // "state", "retransmit", "reset_sent", "reset_received"
	Time   time.Time `json:"time"`
	Src    string    `json:"src"`
	Dst    string    `json:"dst"`
	Old    string    `json:"old,omitempty"`
	New    string    `json:"new,omitempty"`
	State  string    `json:"state,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Source string    `json:"source,omitempty"`
}

// Problem is one problem of a refused rule set, positioned as `finproxy check` does.
type Problem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
}

// Error is the API's answer to a refused request.
type Error struct {
	Status   int       `json:"-"`
	Message  string    `json:"error"`
	Problems []Problem `json:"problems,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("finproxy API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Client is a connection to one finproxy serve.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends the bearer token finproxy serve was given (--token-file).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client of the API at addr: "host:port", "http://host:port", or
// "unix:/path/to/socket" ("": DefaultAddr).
func New(addr string, opts ...Option) *Client {
	c := &Client{hc: &http.Client{}}
	switch {
	case addr == "":
		c.base = "http://" + DefaultAddr
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//")
		c.base = "http://finproxy"
		c.hc.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	case strings.Contains(addr, "://"):
		c.base = strings.TrimSuffix(addr, "/")
	default:
		c.base = "http://" + addr
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	resp, err := c.send(ctx, method, path, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("finproxy API: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// send makes a request and returns a 2xx response; any other status is an *Error.
func (c *Client) send(ctx context.Context, method, path, ctype string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("finproxy API: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &Error{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
	}
	return nil, e
}

// Rules returns the rule set in place.
func (c *Client) Rules(ctx context.Context) (*RuleSet, error) {
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodGet, "/v1/rules", "", nil, &rs)
}

// Replace puts the rule set in config (TOML, as for `finproxy run -c`) in place. A rule
// set `finproxy check` would refuse is refused with the same problems (*Error).
func (c *Client) Replace(ctx context.Context, config []byte) (*RuleSet, error) {
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodPut, "/v1/rules", "application/toml", config, &rs)
}

// ReplaceJSON is Replace with the rule set as a JSON value of the TOML's shape:
// {"target": {"port": 8080}, "rule": [{"name": "...", "action": "drop", ...}]}.
func (c *Client) ReplaceJSON(ctx context.Context, config any) (*RuleSet, error) {
	b, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodPut, "/v1/rules", "application/json", b, &rs)
}

// Enable switches the rule of that name on (true) or off.
func (c *Client) Enable(ctx context.Context, rule string, on bool) (*RuleSet, error) {
	verb := "disable"
	if on {
		verb = "enable"
	}
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodPost, "/v1/rules/"+url.PathEscape(rule)+"/"+verb, "", nil, &rs)
}

// LoadPreset puts a built-in preset (`finproxy run -c lost-fin`) in place; port, when
// not 0, replaces its target port.
func (c *Client) LoadPreset(ctx context.Context, name string, port uint16) (*RuleSet, error) {
	path := "/v1/presets/" + url.PathEscape(name)
	if port != 0 {
		path += "?port=" + strconv.Itoa(int(port))
	}
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodPost, path, "", nil, &rs)
}

// Presets lists the built-in presets.
func (c *Client) Presets(ctx context.Context) ([]string, error) {
	var names []string
	return names, c.do(ctx, http.MethodGet, "/v1/presets", "", nil, &names)
}

// Reset takes every rule out: segments pass (the hooks stay on the same target, so that
// finproxy goes on following its connections).
func (c *Client) Reset(ctx context.Context) (*RuleSet, error) {
	var rs RuleSet
	return &rs, c.do(ctx, http.MethodPost, "/v1/reset", "", nil, &rs)
}

// Counters returns the per-rule counters and the queue's health.
func (c *Client) Counters(ctx context.Context) (*Counters, error) {
	var cs Counters
	return &cs, c.do(ctx, http.MethodGet, "/v1/counters", "", nil, &cs)
}

// Metrics returns the Prometheus text exposition of /metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/metrics", "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Events is a stream of segment verdicts (server-sent events), from the moment it was
// opened. Close it when done.
type Events struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events opens the stream of verdicts. It returns once finproxy has subscribed it: every
// segment given a verdict after that is in the stream (unless the reader falls so far
// behind that finproxy drops events for it: a "lost" event says how many).
func (c *Client) Events(ctx context.Context) (*Events, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/events", "", nil)
	if err != nil {
		return nil, err
	}
	ev := &Events{body: resp.Body, sc: bufio.NewScanner(resp.Body)}
	// The server's first event says it subscribed us.
	if _, err := ev.next(); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return ev, nil
}

// Connections returns the connections serve's Observer saw on the current target
// (a *Error with Status 404 when serve runs no observer).
func (c *Client) Connections(ctx context.Context) (*Connections, error) {
	var cs Connections
	return &cs, c.do(ctx, http.MethodGet, "/v1/connections", "", nil, &cs)
}

// NextObserved returns the next event of the Observer (state changes, retransmissions,
// resets), skipping segment events; it blocks until one comes or the stream ends.
func (e *Events) NextObserved() (StateChange, error) {
	for {
		kind, data, err := e.nextRaw()
		if err != nil {
			return StateChange{}, err
		}
		switch kind {
		case "state", "retransmit", "reset":
			var sc StateChange
			if err := json.Unmarshal(data, &sc); err != nil {
				return StateChange{}, fmt.Errorf("finproxy API: event %q: %w", data, err)
			}
			return sc, nil
		case "lost":
			return StateChange{}, fmt.Errorf("%w: %s", ErrLost, data)
		}
	}
}

// ErrLost is returned by Next when finproxy dropped events for this stream (the reader
// was too slow); the stream goes on.
var ErrLost = errors.New("finproxy API: events lost: the reader fell behind")

// Next returns the next segment event (skipping the Observer's: NextObserved); it blocks until one comes or the stream ends
// (io.EOF, or the context's error).
func (e *Events) Next() (Event, error) {
	for {
		kind, data, err := e.nextRaw()
		if err != nil {
			return Event{}, err
		}
		switch kind {
		case "segment":
			var ev Event
			if err := json.Unmarshal(data, &ev); err != nil {
				return Event{}, fmt.Errorf("finproxy API: event %q: %w", data, err)
			}
			return ev, nil
		case "lost":
			return Event{}, fmt.Errorf("%w: %s", ErrLost, data)
		}
	}
}

func (e *Events) next() (string, error) {
	kind, _, err := e.nextRaw()
	return kind, err
}

// nextRaw reads one server-sent event: its type and data.
func (e *Events) nextRaw() (kind string, data []byte, err error) {
	for e.sc.Scan() {
		line := e.sc.Text()
		switch {
		case line == "":
			if kind != "" || data != nil {
				return kind, data, nil
			}
		case strings.HasPrefix(line, "event: "):
			kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: ")...)
		}
	}
	if err := e.sc.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, io.EOF
}

// Close ends the stream.
func (e *Events) Close() error { return e.body.Close() }
