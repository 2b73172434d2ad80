package control

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// Backend is the finproxy being driven (runner.Service).
type Backend interface {
	Replace(cfg *rules.Config) error
	// ReplaceRedirected is Replace with the DNAT redirections of the Toxiproxy proxies
	// whose listen is not their upstream.
	ReplaceRedirected(cfg *rules.Config, rd []nfq.Redirect) error
	Counters() []rules.Counters
	QueueStats() nfq.Stats
	KernelStats() (nfq.KernelQueueStats, error)
	Undecodable() uint64
	Replacements() uint64
	Queue() uint16
	HookScope() string
}

// DefaultMaxBody bounds a request's body (a rule set): larger ones get 413.
const DefaultMaxBody = 1 << 20

// Options configure a Server.
type Options struct {
	Backend Backend
	// Token, when set, must come with every request as "Authorization: Bearer TOKEN"
	// (401 otherwise). finproxy serve requires one on any listener but loopback and
	// unix sockets.
	Token string
	// Check is applied to every rule set after it parsed, as `finproxy check` applies its
	// flags (the target overrides of finproxy serve, and the check that a scope is left).
	Check func(cfg *rules.Config) error
	// MaxBody bounds request bodies (0: DefaultMaxBody).
	MaxBody int64
	Logger  *slog.Logger
	// Observed is serve's Observer, nil when it runs none (GET /v1/connections then
	// answers 404 saying so).
	Observed Observed
}

// Observed gives the connections the Observer saw, for GET /v1/connections.
type Observed interface {
	// Connections returns the connections of the current target with their timelines,
	// as the JSON of client.Connections.
	Connections() (any, error)
}

// Server serves the API. Its Record method must see every segment record (give it to
// runner.ServeOptions.OnRecord).
type Server struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
	ev  broadcaster
	met *metrics

	mu       sync.Mutex // serialises changes of the rule set
	full     *rules.Config
	source   string
	disabled map[string]bool
	proxies  []*toxiProxy // the Toxiproxy view (toxiproxy.go); a native change forgets it
}

// New returns a Server with no rule set recorded yet (SetInitial records the first).
func New(o Options) *Server {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux(), full: &rules.Config{}, disabled: map[string]bool{}}
	s.ev.subs = map[*subscriber]struct{}{}
	s.met = newMetrics(s)
	s.mux.HandleFunc("GET /v1/rules", s.getRules)
	s.mux.HandleFunc("PUT /v1/rules", s.putRules)
	s.mux.HandleFunc("POST /v1/rules/{name}/enable", s.enable)
	s.mux.HandleFunc("POST /v1/rules/{name}/disable", s.enable)
	s.mux.HandleFunc("GET /v1/presets", s.presets)
	s.mux.HandleFunc("POST /v1/presets/{name}", s.loadPreset)
	s.mux.HandleFunc("POST /v1/reset", s.reset)
	s.mux.HandleFunc("GET /v1/counters", s.counters)
	s.mux.HandleFunc("GET /v1/events", s.events)
	s.mux.HandleFunc("GET /v1/connections", s.connections)
	s.mux.Handle("GET /metrics", s.met.handler())
	s.toxiRoutes()
	return s
}

// SetInitial records the rule set finproxy serve started with (already in place in the
// Backend) and its source text.
func (s *Server) SetInitial(cfg *rules.Config, source []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.full, s.source = cfg, string(source)
}

// Record hands a segment record to the event streams and the metrics. It does not
// block and does not allocate when nobody follows the events.
func (s *Server) Record(r rules.Record) {
	s.met.record(&r)
	s.ev.publish(&r)
}

// ServeHTTP checks the token and serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.o.Token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="finproxy"`)
			writeError(w, &client.Error{Status: http.StatusUnauthorized,
				Message: "this finproxy serve needs a bearer token (Authorization: Bearer TOKEN, the content of its --token-file)"})
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *client.Error) {
	writeJSON(w, e.Status, e)
}

// ruleSet describes the rule set in place (s.mu held).
func (s *Server) ruleSet() *client.RuleSet {
	cfg := s.full
	rs := &client.RuleSet{
		Name:         cfg.Name,
		Source:       s.source,
		Rules:        []client.Rule{},
		Queued:       s.effective().QueueScope().String(),
		Hooked:       s.o.Backend.HookScope(),
		Replacements: s.o.Backend.Replacements(),
	}
	rs.Target.Port, rs.Target.Ports = cfg.Target.Port, cfg.Target.Ports
	for _, a := range cfg.Target.Addresses {
		rs.Target.Addresses = append(rs.Target.Addresses, a.String())
	}
	rs.Target.Hook = string(cfg.Target.Hook)
	if rs.Target.Hook == "" {
		rs.Target.Hook = string(rules.HookLocal)
	}
	rs.Target.Queue = s.o.Backend.Queue()
	for _, r := range cfg.Rules {
		rs.Rules = append(rs.Rules, client.Rule{Name: r.Name, Action: r.ActionName, Enabled: !s.disabled[r.Name]})
	}
	return rs
}

// effective is the rule set without its disabled rules (s.mu held).
func (s *Server) effective() *rules.Config {
	c := *s.full
	c.Rules = slices.DeleteFunc(slices.Clone(c.Rules), func(r *rules.Rule) bool { return s.disabled[r.Name] })
	return &c
}

func (s *Server) getRules(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writeJSON(w, http.StatusOK, s.ruleSet())
}

// readBody reads a request body within the size limit; on failure it has answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.o.MaxBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, &client.Error{Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf("the body is larger than the limit of %d bytes", mbe.Limit)})
		return nil, false
	case err != nil:
		writeError(w, &client.Error{Status: http.StatusBadRequest, Message: "reading the body: " + err.Error()})
		return nil, false
	}
	return buf.Bytes(), true
}

// bodyFile names the request body in positions: "request:3:7: rule[1].action: ...".
const bodyFile = "request"

func (s *Server) putRules(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	file := bodyFile
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		var err error
		if body, err = jsonToTOML(body); err != nil {
			writeError(w, &client.Error{Status: http.StatusBadRequest, Message: "the body is not a JSON rule set: " + err.Error()})
			return
		}
		file = "request (JSON turned into TOML)"
	}
	s.replace(w, body, file)
}

// replace validates source as `finproxy check` would and puts it in place; every rule
// is enabled again.
func (s *Server) replace(w http.ResponseWriter, source []byte, file string) {
	if err := checkNesting(source, file); err != nil {
		writeError(w, refusal(err))
		return
	}
	f, err := config.Parse(source, file)
	if err == nil && s.o.Check != nil {
		err = s.o.Check(&f.Config)
	}
	if err != nil {
		writeError(w, refusal(err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A native rule set forgets the Toxiproxy proxies, and so their redirections.
	cfg := &f.Config
	if err := s.o.Backend.ReplaceRedirected(cfg, nil); err != nil {
		writeError(w, &client.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()})
		return
	}
	s.full, s.source, s.disabled, s.proxies = cfg, string(source), map[string]bool{}, nil
	s.log.Info("rule set replaced", "name", cfg.Name, "rules", len(cfg.Rules))
	writeJSON(w, http.StatusOK, s.ruleSet())
}

// refusal turns a validation error into a 400 with its positioned problems.
func refusal(err error) *client.Error {
	e := &client.Error{Status: http.StatusBadRequest, Message: err.Error()}
	var ces config.ConfigErrors
	if errors.As(err, &ces) {
		for _, ce := range ces {
			e.Problems = append(e.Problems, client.Problem{File: ce.Pos.File, Line: ce.Pos.Line, Col: ce.Pos.Col, Key: ce.Key, Message: ce.Msg})
		}
	}
	return e
}

func (s *Server) enable(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	on := strings.HasSuffix(r.URL.Path, "/enable")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.ContainsFunc(s.full.Rules, func(x *rules.Rule) bool { return x.Name == name }) {
		var names []string
		for _, x := range s.full.Rules {
			names = append(names, x.Name)
		}
		writeError(w, &client.Error{Status: http.StatusNotFound,
			Message: fmt.Sprintf("no rule %q in the rule set in place (rules: %s)", name, strings.Join(names, ", "))})
		return
	}
	was := s.disabled[name]
	s.disabled[name] = !on
	if err := s.o.Backend.Replace(s.effective()); err != nil {
		s.disabled[name] = was
		writeError(w, &client.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.ruleSet())
}

func (s *Server) presets(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, configs.Names())
}

func (s *Server) loadPreset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	data, path, ok := configs.Read(name)
	if !ok {
		writeError(w, &client.Error{Status: http.StatusNotFound,
			Message: fmt.Sprintf("no built-in preset %q (presets: %s)", name, strings.Join(configs.Names(), ", "))})
		return
	}
	if p := r.URL.Query().Get("port"); p != "" {
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			writeError(w, &client.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("port=%q: want a TCP port, 1-65535", p)})
			return
		}
		cfg, err := config.Parse(data, path)
		if err != nil {
			writeError(w, refusal(err))
			return
		}
		cfg.Target.Port = uint16(port)
		s.replaceConfig(w, &cfg.Config, data)
		return
	}
	s.replace(w, data, path)
}

// replaceConfig is replace for a config parsed and changed here (a preset on another port).
func (s *Server) replaceConfig(w http.ResponseWriter, cfg *rules.Config, source []byte) {
	if s.o.Check != nil {
		if err := s.o.Check(cfg); err != nil {
			writeError(w, refusal(err))
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A native rule set forgets the Toxiproxy proxies, and so their redirections.
	if err := s.o.Backend.ReplaceRedirected(cfg, nil); err != nil {
		writeError(w, &client.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()})
		return
	}
	s.full, s.source, s.disabled, s.proxies = cfg, string(source), map[string]bool{}, nil
	writeJSON(w, http.StatusOK, s.ruleSet())
}

// reset takes every rule out and keeps the target: segments pass, the hooks stay, the
// connections are still followed.
func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.proxies) > 0 {
		// Toxiproxy's view resets too: the proxies stay, enabled, without toxics.
		if err := s.resetProxies(); err != nil {
			writeError(w, &client.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s.ruleSet())
		return
	}
	cfg := &rules.Config{Name: "reset", File: s.full.File, Target: s.full.Target}
	if err := s.o.Backend.Replace(cfg); err != nil {
		writeError(w, &client.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()})
		return
	}
	s.full, s.source, s.disabled = cfg, "", map[string]bool{}
	writeJSON(w, http.StatusOK, s.ruleSet())
}

func (s *Server) counters(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.snapshot())
}

func (s *Server) snapshot() *client.Counters {
	b := s.o.Backend
	out := &client.Counters{Rules: []client.RuleCounters{}, Undecodable: b.Undecodable()}
	for _, c := range b.Counters() {
		out.Rules = append(out.Rules, client.RuleCounters(c))
	}
	q := b.QueueStats()
	out.Queue = client.QueueCounters{Received: q.Received, Verdicts: q.Verdicts, ENOBUFS: q.ENOBUFS, VerdictErrors: q.VerdictErrors}
	if ks, err := b.KernelStats(); err == nil {
		out.Queue.KernelDropped, out.Queue.UserDropped, out.Queue.Waiting = uint64(ks.Dropped), uint64(ks.UserDropped), uint64(ks.Waiting)
	}
	return out
}

// jsonToTOML turns a JSON rule set (an object of the TOML's shape) into TOML, so that it
// is checked as a file is; integers stay integers.
func jsonToTOML(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(numbers(v)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// numbers replaces the json.Numbers in v by int64 or float64.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

// connections answers the observed connections of the current target and their
// timelines (the shapes of the lab's report.json).
func (s *Server) connections(w http.ResponseWriter, r *http.Request) {
	if s.o.Observed == nil {
		writeError(w, &client.Error{Status: http.StatusNotFound,
			Message: "this finproxy serve runs no observer (started with --no-observe, or no source could start: see its log)"})
		return
	}
	v, err := s.o.Observed.Connections()
	if err != nil {
		writeError(w, &client.Error{Status: http.StatusInternalServerError, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, v)
}
