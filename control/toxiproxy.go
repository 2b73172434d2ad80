package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// The Toxiproxy-compatible endpoints: Toxiproxy's paths, JSON and status codes, so that
// its clients drive finproxy unchanged. A proxy names the connections to act on; its
// toxics become rules on them (see toxicRules for the mapping). Every change builds the
// whole rule set again as TOML and puts it in place through the same checks as PUT
// /v1/rules; GET /v1/rules shows it.
//
// A proxy whose listen differs from its upstream is a redirection in the kernel (DNAT:
// nfq.Redirect), no copy of the stream. Several proxies make one rule set: its target
// holds every upstream port and address, and each toxic's rules carry server_port, its
// proxy's upstream port, so that they act on that proxy's connections only; two proxies
// on one upstream port must each have an upstream of one address, and different ones:
// their rules then carry server_address too.
//
// The toxics with a timer or a byte count become rules of the engine's actions that keep
// them per connection: timeout (stall), reset_peer (inject-rst with a delay), limit_data
// (cut), bandwidth (pace); those need a toxicity of 1, Toxiproxy drawing it once per
// connection. What finproxy cannot match (slicer) is refused.

// ToxiproxyVersion is the Toxiproxy API version the endpoints follow.
const ToxiproxyVersion = "2.12.0"

type toxiProxy struct {
	Name     string  `json:"name"`
	Listen   string  `json:"listen"`
	Upstream string  `json:"upstream"`
	Enabled  bool    `json:"enabled"`
	Toxics   []toxic `json:"toxics"`
}

type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

type toxiError struct {
	Message string `json:"error"`
	Status  int    `json:"status"`
}

func toxiFail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, toxiError{fmt.Sprintf(format, args...), status})
}

func (s *Server) toxiRoutes() {
	s.mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": ToxiproxyVersion})
	})
	s.mux.HandleFunc("POST /reset", s.toxiReset)
	s.mux.HandleFunc("GET /proxies", s.toxiIndex)
	s.mux.HandleFunc("POST /proxies", s.toxiCreate)
	s.mux.HandleFunc("POST /populate", s.toxiPopulate)
	s.mux.HandleFunc("GET /proxies/{proxy}", s.toxiShow)
	s.mux.HandleFunc("POST /proxies/{proxy}", s.toxiUpdate)
	s.mux.HandleFunc("PATCH /proxies/{proxy}", s.toxiUpdate)
	s.mux.HandleFunc("DELETE /proxies/{proxy}", s.toxiDelete)
	s.mux.HandleFunc("GET /proxies/{proxy}/toxics", s.toxicIndex)
	s.mux.HandleFunc("POST /proxies/{proxy}/toxics", s.toxicCreate)
	s.mux.HandleFunc("GET /proxies/{proxy}/toxics/{toxic}", s.toxicShow)
	s.mux.HandleFunc("POST /proxies/{proxy}/toxics/{toxic}", s.toxicUpdate)
	s.mux.HandleFunc("PATCH /proxies/{proxy}/toxics/{toxic}", s.toxicUpdate)
	s.mux.HandleFunc("DELETE /proxies/{proxy}/toxics/{toxic}", s.toxicDelete)
}

// decodeBody decodes a JSON body within the size limit; on failure it has answered.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.o.MaxBody))
	err := dec.Decode(v)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		toxiFail(w, http.StatusRequestEntityTooLarge, "the body is larger than the limit of %d bytes", mbe.Limit)
		return false
	case errors.Is(err, io.EOF):
		toxiFail(w, http.StatusBadRequest, "bad request body: empty")
		return false
	case err != nil:
		toxiFail(w, http.StatusBadRequest, "bad request body: %v", err)
		return false
	}
	return true
}

// proxy returns the proxy of that name (s.mu held), or answers 404.
func (s *Server) proxy(w http.ResponseWriter, name string) *toxiProxy {
	for _, p := range s.proxies {
		if p.Name == name {
			return p
		}
	}
	toxiFail(w, http.StatusNotFound, "proxy not found")
	return nil
}

func (s *Server) toxiIndex(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*toxiProxy{}
	for _, p := range s.proxies {
		out[p.Name] = p
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) toxiShow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxy(w, r.PathValue("proxy")); p != nil {
		writeJSON(w, http.StatusOK, p)
	}
}

// checkProxy validates a new proxy against the ones there are (s.mu held).
func (s *Server) checkProxy(p *toxiProxy, others []*toxiProxy) (int, error) {
	switch {
	case p.Name == "":
		return http.StatusBadRequest, errors.New("missing required field: name")
	case p.Upstream == "":
		return http.StatusBadRequest, errors.New("missing required field: upstream")
	}
	_, up, err := splitUpstream(p.Upstream)
	if err != nil {
		return http.StatusBadRequest, err
	}
	if p.Listen == "" {
		p.Listen = p.Upstream
	}
	redirected := !sameEndpoint(p.Listen, p.Upstream)
	if redirected {
		_, lp, err := splitUpstream(p.Listen)
		if err != nil {
			return http.StatusBadRequest, fmt.Errorf("listen: %w", err)
		}
		if lp == up {
			return http.StatusBadRequest, fmt.Errorf("proxy %s: listen %s and upstream %s share port %d: finproxy redirects by port in the kernel and tells its proxies apart by upstream port; give listen another port",
				p.Name, p.Listen, p.Upstream, lp)
		}
	}
	for _, o := range others {
		if o.Name == p.Name {
			return http.StatusConflict, errors.New("proxy already exists")
		}
	}
	for _, o := range others {
		_, oup, _ := splitUpstream(o.Upstream)
		_, olp, _ := splitUpstream(o.Listen)
		_, lp, _ := splitUpstream(p.Listen)
		switch {
		case oup == up && !apart(p, o):
			return http.StatusConflict, fmt.Errorf("proxy %s: upstream port %d is proxy %s's (upstream %s): finproxy tells proxies apart by upstream port, or by address on one port when each upstream is one address and they differ",
				p.Name, up, o.Name, o.Upstream)
		case redirected && (lp == oup || lp == olp):
			return http.StatusConflict, fmt.Errorf("proxy %s: listen port %d is proxy %s's (listen %s, upstream %s)", p.Name, lp, o.Name, o.Listen, o.Upstream)
		case !sameEndpoint(o.Listen, o.Upstream) && olp == up:
			return http.StatusConflict, fmt.Errorf("proxy %s: upstream port %d is where proxy %s listens (%s)", p.Name, up, o.Name, o.Listen)
		}
	}
	return 0, nil
}

// upstreamAddr is the one address of p's upstream; false when its host is none, any, or
// resolves to several or none.
func upstreamAddr(p *toxiProxy) (netip.Addr, bool) {
	host, _, err := splitUpstream(p.Upstream)
	if err != nil {
		return netip.Addr{}, false
	}
	as, err := lookup(host)
	if err != nil || len(as) != 1 {
		return netip.Addr{}, false
	}
	return as[0], true
}

// apart reports whether the connections of proxies p and o can be told apart by their
// upstream's address (rule key server_address): each upstream is one address, and they
// differ.
func apart(p, o *toxiProxy) bool {
	a, ok1 := upstreamAddr(p)
	b, ok2 := upstreamAddr(o)
	return ok1 && ok2 && a != b
}

func splitUpstream(hp string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("upstream %q: want HOST:PORT: %w", hp, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("upstream %q: want a port of 1-65535", hp)
	}
	return host, uint16(n), nil
}

func sameEndpoint(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return ha == hb
}

func (s *Server) toxiCreate(w http.ResponseWriter, r *http.Request) {
	p := &toxiProxy{Enabled: true}
	if !s.decodeBody(w, r, p) {
		return
	}
	p.Toxics = []toxic{}
	s.mu.Lock()
	defer s.mu.Unlock()
	if code, err := s.checkProxy(p, s.proxies); err != nil {
		toxiFail(w, code, "%s", err)
		return
	}
	if err := s.applyProxies(append(slices.Clone(s.proxies), p)); err != nil {
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

// toxiPopulate replaces the proxies of the same names and creates the others.
func (s *Server) toxiPopulate(w http.ResponseWriter, r *http.Request) {
	var in []*toxiProxy
	if !s.decodeBody(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := slices.Clone(s.proxies)
	for _, p := range in {
		if p == nil {
			toxiFail(w, http.StatusBadRequest, "bad request body: a proxy is null")
			return
		}
		next = slices.DeleteFunc(next, func(o *toxiProxy) bool { return o.Name == p.Name })
		p.Toxics = []toxic{}
		if code, err := s.checkProxy(p, next); err != nil {
			toxiFail(w, code, "%s", err)
			return
		}
		next = append(next, p)
	}
	if err := s.applyProxies(next); err != nil {
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"proxies": in})
}

// toxiUpdate changes a proxy's enabled, listen and upstream (fields not given keep their
// values), as Toxiproxy's update does; the proxy keeps its toxics. A move is checked as a
// new proxy is, against the others.
func (s *Server) toxiUpdate(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Enabled  *bool  `json:"enabled"`
		Listen   string `json:"listen"`
		Upstream string `json:"upstream"`
	}
	if !s.decodeBody(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	q := *p
	if in.Enabled != nil {
		q.Enabled = *in.Enabled
	}
	if in.Listen != "" {
		q.Listen = in.Listen
	}
	if in.Upstream != "" {
		q.Upstream = in.Upstream
	}
	if q.Upstream != p.Upstream || !sameEndpoint(q.Listen, p.Listen) {
		others := slices.DeleteFunc(slices.Clone(s.proxies), func(o *toxiProxy) bool { return o == p })
		if code, err := s.checkProxy(&q, others); err != nil {
			toxiFail(w, code, "%s", err)
			return
		}
	}
	next := slices.Clone(s.proxies)
	next[slices.Index(next, p)] = &q
	if err := s.applyProxies(next); err != nil {
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	writeJSON(w, http.StatusOK, &q)
}

func (s *Server) toxiDelete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	if err := s.applyProxies(slices.DeleteFunc(slices.Clone(s.proxies), func(o *toxiProxy) bool { return o == p })); err != nil {
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// toxiReset removes every toxic and enables every proxy, as Toxiproxy's reset does.
func (s *Server) toxiReset(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.proxies) == 0 {
		// No proxy: finproxy's own reset (the rule set may be a native one).
		cfg := &rules.Config{Name: "reset", File: s.full.File, Target: s.full.Target}
		if err := s.o.Backend.Replace(cfg); err != nil {
			toxiFail(w, http.StatusInternalServerError, "%s", err)
			return
		}
		s.full, s.source, s.disabled = cfg, "", map[string]bool{}
	} else if err := s.resetProxies(); err != nil {
		toxiFail(w, http.StatusInternalServerError, "%s", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// resetProxies enables every proxy and removes its toxics (s.mu held).
func (s *Server) resetProxies() error {
	next := make([]*toxiProxy, len(s.proxies))
	for i, p := range s.proxies {
		q := *p
		q.Enabled, q.Toxics = true, []toxic{}
		next[i] = &q
	}
	return s.applyProxies(next)
}

func (s *Server) toxicIndex(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxy(w, r.PathValue("proxy")); p != nil {
		writeJSON(w, http.StatusOK, p.Toxics)
	}
}

func (s *Server) toxicShow(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	i := slices.IndexFunc(p.Toxics, func(t toxic) bool { return t.Name == r.PathValue("toxic") })
	if i < 0 {
		toxiFail(w, http.StatusNotFound, "toxic not found")
		return
	}
	writeJSON(w, http.StatusOK, p.Toxics[i])
}

func (s *Server) toxicCreate(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name       string         `json:"name"`
		Type       string         `json:"type"`
		Stream     string         `json:"stream"`
		Toxicity   *float32       `json:"toxicity"`
		Attributes map[string]any `json:"attributes"`
	}
	if !s.decodeBody(w, r, &in) {
		return
	}
	t := toxic{Name: in.Name, Type: in.Type, Stream: in.Stream, Toxicity: 1, Attributes: in.Attributes}
	if in.Toxicity != nil {
		t.Toxicity = *in.Toxicity
	}
	if t.Stream == "" {
		t.Stream = "downstream"
	}
	if t.Name == "" {
		t.Name = t.Type + "_" + t.Stream
	}
	if t.Attributes == nil {
		t.Attributes = map[string]any{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	if slices.ContainsFunc(p.Toxics, func(o toxic) bool { return o.Name == t.Name }) {
		toxiFail(w, http.StatusConflict, "toxic already exists")
		return
	}
	q := *p
	q.Toxics = append(slices.Clone(p.Toxics), t)
	s.putProxy(w, p, &q, t)
}

func (s *Server) toxicUpdate(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Toxicity   *float32       `json:"toxicity"`
		Attributes map[string]any `json:"attributes"`
	}
	if !s.decodeBody(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	i := slices.IndexFunc(p.Toxics, func(t toxic) bool { return t.Name == r.PathValue("toxic") })
	if i < 0 {
		toxiFail(w, http.StatusNotFound, "toxic not found")
		return
	}
	q := *p
	q.Toxics = slices.Clone(p.Toxics)
	t := &q.Toxics[i]
	if in.Toxicity != nil {
		t.Toxicity = *in.Toxicity
	}
	if in.Attributes != nil {
		attrs := map[string]any{}
		for k, v := range t.Attributes {
			attrs[k] = v
		}
		for k, v := range in.Attributes {
			attrs[k] = v
		}
		t.Attributes = attrs
	}
	s.putProxy(w, p, &q, *t)
}

func (s *Server) toxicDelete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxy(w, r.PathValue("proxy"))
	if p == nil {
		return
	}
	name := r.PathValue("toxic")
	if !slices.ContainsFunc(p.Toxics, func(t toxic) bool { return t.Name == name }) {
		toxiFail(w, http.StatusNotFound, "toxic not found")
		return
	}
	q := *p
	q.Toxics = slices.DeleteFunc(slices.Clone(p.Toxics), func(t toxic) bool { return t.Name == name })
	next := slices.Clone(s.proxies)
	next[slices.Index(next, p)] = &q
	if err := s.applyProxies(next); err != nil {
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// putProxy puts q in place of p and answers with toxic t (s.mu held).
func (s *Server) putProxy(w http.ResponseWriter, p, q *toxiProxy, t toxic) {
	next := slices.Clone(s.proxies)
	next[slices.Index(next, p)] = q
	if err := s.applyProxies(next); err != nil {
		var te *toxicError
		if errors.As(err, &te) {
			toxiFail(w, te.status, "%s", te.msg)
			return
		}
		toxiFail(w, http.StatusBadRequest, "%s", err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// applyProxies builds the rule set of the proxies, checks it as PUT /v1/rules does and
// puts it in place with their redirections; the proxies are kept only if it was (s.mu
// held).
func (s *Server) applyProxies(next []*toxiProxy) error {
	var cfg *rules.Config
	var source []byte
	var rd []nfq.Redirect
	if len(next) == 0 {
		cfg = &rules.Config{Name: "toxiproxy"}
	} else {
		var err error
		if source, err = proxiesTOML(next); err != nil {
			return err
		}
		f, err := config.Parse(source, "toxiproxy")
		if err != nil {
			return fmt.Errorf("the rules made of the proxies' toxics: %w\n%s", err, source)
		}
		cfg = &f.Config
		if s.o.Check != nil {
			if err := s.o.Check(cfg); err != nil {
				return err
			}
		}
		for _, p := range next {
			r, err := redirectsOf(p)
			if err != nil {
				return err
			}
			rd = append(rd, r...)
		}
	}
	if err := s.o.Backend.ReplaceRedirected(cfg, rd); err != nil {
		return err
	}
	s.proxies = next
	s.full, s.source, s.disabled = cfg, string(source), map[string]bool{}
	return nil
}

// lookup resolves a proxy's host ("" and the unspecified addresses: none, any address).
func lookup(host string) ([]netip.Addr, error) {
	if host == "" || host == "0.0.0.0" || host == "::" {
		return nil, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ips, err := net.LookupHost(host)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// redirectsOf returns the DNAT redirections of proxy p (none when listen is upstream):
// from each listen address to the upstream address of the same family.
func redirectsOf(p *toxiProxy) ([]nfq.Redirect, error) {
	if sameEndpoint(p.Listen, p.Upstream) {
		return nil, nil
	}
	lh, lp, err := splitUpstream(p.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: listen: %w", p.Name, err)
	}
	uh, up, err := splitUpstream(p.Upstream)
	if err != nil {
		return nil, err
	}
	las, err := lookup(lh)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: listen %s: %w", p.Name, p.Listen, err)
	}
	uas, err := lookup(uh)
	if err != nil || len(uas) == 0 {
		return nil, fmt.Errorf("proxy %s: upstream %s: finproxy redirects to an address: give the upstream's host (%v)", p.Name, p.Upstream, err)
	}
	var out []nfq.Redirect
	for _, u := range uas {
		if len(las) == 0 {
			any := netip.IPv4Unspecified()
			if u.Is6() {
				any = netip.IPv6Unspecified()
			}
			out = append(out, nfq.Redirect{Listen: netip.AddrPortFrom(any, lp), Upstream: netip.AddrPortFrom(u, up)})
			continue
		}
		for _, l := range las {
			if l.Is4() == u.Is4() {
				out = append(out, nfq.Redirect{Listen: netip.AddrPortFrom(l, lp), Upstream: netip.AddrPortFrom(u, up)})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("proxy %s: listen %s and upstream %s have no address family in common", p.Name, p.Listen, p.Upstream)
	}
	return out, nil
}

// toxicError is a toxic finproxy refuses, with Toxiproxy's status for it.
type toxicError struct {
	status int
	msg    string
}

func (e *toxicError) Error() string { return e.msg }

func refuseToxic(t toxic, format string, args ...any) error {
	return &toxicError{http.StatusBadRequest, fmt.Sprintf("toxic %s (type %s): ", t.Name, t.Type) + fmt.Sprintf(format, args...)}
}

// proxiesTOML writes the rule set of the proxies as TOML: its target holds every upstream
// port and address, its rules are those of each proxy's toxics in order (and, when
// disabled, a reset of everything), each with server_port = the proxy's upstream port.
func proxiesTOML(ps []*toxiProxy) ([]byte, error) {
	var ports []int64
	var addrs []string
	anyAddr := false
	var rs []map[string]any
	for _, p := range ps {
		host, port, err := splitUpstream(p.Upstream)
		if err != nil {
			return nil, err
		}
		// A port another proxy's upstream shares: the rules name the address too.
		shared := slices.ContainsFunc(ps, func(o *toxiProxy) bool {
			_, op, _ := splitUpstream(o.Upstream)
			return o != p && op == port
		})
		if !slices.Contains(ports, int64(port)) {
			ports = append(ports, int64(port))
		}
		ips, err := lookup(host)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", p.Upstream, err)
		}
		anyAddr = anyAddr || len(ips) == 0
		for _, a := range ips {
			if !slices.Contains(addrs, a.String()) {
				addrs = append(addrs, a.String())
			}
		}
		var prs []map[string]any
		if !p.Enabled {
			// New connections refused, existing ones reset: every segment answered by a RST
			// both ways, and dropped.
			prs = append(prs, map[string]any{"name": "proxy-disabled", "action": "inject-rst", "toward": "both", "segment": "drop"})
		}
		for _, t := range p.Toxics {
			tr, err := toxicRules(t)
			if err != nil {
				return nil, err
			}
			prs = append(prs, tr...)
		}
		for _, r := range prs {
			if len(ps) > 1 {
				// Rule names are unique in a set, toxic names in a proxy: NAME:TOXIC.
				r["server_port"] = int64(port)
				r["name"] = p.Name + ":" + fmt.Sprint(r["name"])
				if a, ok := upstreamAddr(p); ok && shared {
					r["server_address"] = a.String()
				}
			}
			rs = append(rs, r)
		}
	}
	if len(ports) > config.MaxPorts {
		return nil, fmt.Errorf("%d proxies: finproxy serves up to %d", len(ports), config.MaxPorts)
	}
	target := map[string]any{"port": ports[0]}
	if len(ports) > 1 {
		target["port"] = ports
	}
	if len(addrs) > 0 && !anyAddr {
		target["address"] = addrs
	}
	name := "toxiproxy-" + ps[0].Name
	if len(ps) > 1 {
		name = "toxiproxy"
	}
	doc := map[string]any{"name": name, "target": target}
	if len(rs) > 0 {
		doc["rule"] = rs
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ms reads a toxic attribute in milliseconds (a JSON number), 0 when absent.
func ms(t toxic, key string) (int64, error) {
	v, ok := t.Attributes[key]
	if !ok || v == nil {
		return 0, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > 24*3600*1000 {
		return 0, refuseToxic(t, "attribute %s = %v: want a whole number of milliseconds, 0 to 86400000", key, v)
	}
	return int64(f), nil
}

// toxicArgs is what a toxic type's entry maps: the toxic, and the side its stream
// names (downstream: "server", what the upstream sends; upstream: "client").
type toxicArgs struct {
	t    toxic
	side string
}

// rule makes a rule of the toxic: named after it (NAME, or NAME:SUFFIX when suffix is
// not ""), acting with its toxicity as probability, with the keys and values of fields.
func (a toxicArgs) rule(suffix string, fields ...any) map[string]any {
	name := a.t.Name
	if suffix != "" {
		name += ":" + suffix
	}
	m := map[string]any{"name": name}
	for i := 0; i+1 < len(fields); i += 2 {
		m[fields[i].(string)] = fields[i+1]
	}
	if a.t.Toxicity < 1 {
		m["probability"] = float64(a.t.Toxicity)
	}
	return m
}

// ms reads attribute key in milliseconds; msText writes a number of them as a duration.
func (a toxicArgs) ms(key string) (int64, error) { return ms(a.t, key) }

func msText(n int64) string { return fmt.Sprintf("%dms", n) }

// count reads attribute key as a whole number from 0 to most, 0 when absent.
func (a toxicArgs) count(key string, most int64) (int64, error) {
	v, ok := a.t.Attributes[key]
	if !ok || v == nil {
		return 0, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > float64(most) {
		return 0, a.refuse("attribute %s = %v: want a whole number, 0 to %d", key, v, most)
	}
	return int64(f), nil
}

// perConnection refuses a toxicity other than 1 for a toxic whose effect spans the
// connection: Toxiproxy draws it once per connection, finproxy's probability is drawn
// per segment.
func (a toxicArgs) perConnection() error {
	if a.t.Toxicity < 1 {
		return a.refuse("toxicity %v: Toxiproxy draws it once per connection, finproxy's probability once per segment, which for %s does not mean the same; give 1 (or 0: off)", a.t.Toxicity, a.t.Type)
	}
	return nil
}

// refuse is a toxic finproxy cannot map, with the reason.
func (a toxicArgs) refuse(format string, args ...any) error {
	return refuseToxic(a.t, format, args...)
}

// toxicType maps a Toxiproxy toxic of one type to rules, or refuses it.
type toxicType func(a toxicArgs) ([]map[string]any, error)

// toxicTypes holds an entry per toxic type finproxy maps or refuses; a type not here is
// one of finproxy's presets, or unknown.
var toxicTypes = map[string]toxicType{
	// latency: the data segments delayed.
	"latency": func(a toxicArgs) ([]map[string]any, error) {
		lat, err := a.ms("latency")
		if err != nil {
			return nil, err
		}
		jit, err := a.ms("jitter")
		if err != nil {
			return nil, err
		}
		r := a.rule("", "side", a.side, "payload", "some", "action", "delay", "delay", msText(lat))
		if jit > 0 {
			r["jitter"] = msText(jit)
		}
		return []map[string]any{r}, nil
	},
	// slow_close: the FIN delayed.
	"slow_close": func(a toxicArgs) ([]map[string]any, error) {
		d, err := a.ms("delay")
		if err != nil {
			return nil, err
		}
		return []map[string]any{a.rule("", "side", a.side, "has_flags", "FIN", "action", "delay", "delay", msText(d))}, nil
	},
	// timeout: the data dropped; with a timeout, RSTs both ways once the side has sent
	// no new data for that long (Toxiproxy's timer starts again at each chunk).
	"timeout": func(a toxicArgs) ([]map[string]any, error) {
		d, err := a.ms("timeout")
		if err != nil {
			return nil, err
		}
		if d == 0 {
			return []map[string]any{a.rule("", "side", a.side, "payload", "some", "action", "drop")}, nil
		}
		if err := a.perConnection(); err != nil {
			return nil, err
		}
		return []map[string]any{a.rule("", "side", a.side, "action", "stall", "reset", msText(d))}, nil
	},
	// reset_peer: RSTs both ways, timeout after the first data segment (dropped, as is
	// the side's data until then).
	"reset_peer": func(a toxicArgs) ([]map[string]any, error) {
		d, err := a.ms("timeout")
		if err != nil {
			return nil, err
		}
		if d == 0 {
			return []map[string]any{a.rule("", "side", a.side, "payload", "some", "action", "inject-rst", "toward", "both", "segment", "drop")}, nil
		}
		if err := a.perConnection(); err != nil {
			return nil, err
		}
		return []map[string]any{
			a.rule("", "side", a.side, "payload", "some", "limit", int64(1), "action", "inject-rst", "toward", "both", "segment", "drop", "delay", msText(d)),
			a.rule("drop", "side", a.side, "payload", "some", "action", "drop"),
		}, nil
	},
	// limit_data: the side's first bytes pass, then RSTs both ways.
	"limit_data": func(a toxicArgs) ([]map[string]any, error) {
		n, err := a.count("bytes", math.MaxInt32)
		if err != nil {
			return nil, err
		}
		if err := a.perConnection(); err != nil {
			return nil, err
		}
		return []map[string]any{a.rule("", "side", a.side, "payload", "some", "action", "cut", "bytes", n)}, nil
	},
	// bandwidth: the side's data paced at rate KB/s (0: no limit, as in Toxiproxy).
	"bandwidth": func(a toxicArgs) ([]map[string]any, error) {
		kb, err := a.count("rate", 10_000_000)
		if err != nil {
			return nil, err
		}
		if kb == 0 {
			return nil, nil
		}
		if err := a.perConnection(); err != nil {
			return nil, err
		}
		return []map[string]any{a.rule("", "side", a.side, "payload", "some", "action", "pace", "rate", kb*1000)}, nil
	},
	// noop: nothing, as in Toxiproxy.
	"noop": func(toxicArgs) ([]map[string]any, error) { return nil, nil },
	// rules: finproxy's own rule table, attribute rules.
	"rules": tableRules,
}

// refusedToxics are Toxiproxy's toxic types finproxy cannot match, with the reason.
var refusedToxics = map[string]string{
	"slicer": "not available in finproxy, which does not copy the stream: it acts on whole segments as the sender made them, and cannot slice them into smaller writes",
}

// toxicRules maps one toxic to rules: by its type's entry in toxicTypes, or as the preset
// of that name. stream downstream is what the upstream (server) sends, upstream what the
// client sends; toxicity is the rules' probability.
func toxicRules(t toxic) ([]map[string]any, error) {
	if t.Toxicity < 0 || t.Toxicity > 1 || math.IsNaN(float64(t.Toxicity)) {
		return nil, refuseToxic(t, "toxicity %v: want 0 to 1", t.Toxicity)
	}
	if t.Toxicity == 0 {
		return nil, nil // never acts
	}
	a := toxicArgs{t: t, side: "server"}
	switch t.Stream {
	case "downstream":
	case "upstream":
		a.side = "client"
	default:
		return nil, refuseToxic(t, "stream %q: want downstream or upstream", t.Stream)
	}
	if tt, ok := toxicTypes[t.Type]; ok {
		return tt(a)
	}
	if why, ok := refusedToxics[t.Type]; ok {
		return nil, a.refuse("%s", why)
	}
	return presetRules(a)
}

// tableRules maps a toxic of type rules: attribute rules is a rule table, as TOML text
// ([[rule]] tables) or as JSON (an array of rule objects), checked as finproxy check
// checks a file, its problems placed in that text. The rules keep their own sides and
// probabilities: stream does not apply, and toxicity must be 1 (or 0: off). They are
// named TOXIC:RULE.
func tableRules(a toxicArgs) ([]map[string]any, error) {
	t := a.t
	if t.Toxicity < 1 {
		return nil, a.refuse("toxicity %v: the rules of a rules toxic carry their own probability; give 1 (or 0: off)", t.Toxicity)
	}
	file := fmt.Sprintf("toxic %s attribute rules", t.Name)
	var data []byte
	switch v := t.Attributes["rules"].(type) {
	case string:
		data = []byte(v)
	case []any:
		b, err := json.Marshal(map[string]any{"rule": v})
		if err == nil {
			data, err = jsonToTOML(b)
		}
		if err != nil {
			return nil, a.refuse("attribute rules: %v", err)
		}
		file += " (JSON turned into TOML)"
	case nil:
		return nil, a.refuse("attribute rules is required: finproxy's [[rule]] tables as TOML text, or an array of rule objects")
	default:
		return nil, a.refuse("attribute rules: a %T; want TOML text ([[rule]] tables) or an array of rule objects", v)
	}
	var top map[string]any
	if _, err := toml.Decode(string(data), &top); err == nil {
		for k := range top {
			if k != "rule" {
				return nil, a.refuse("attribute rules: key %s: only [[rule]] tables (the proxy gives the target)", k)
			}
		}
	}
	// The proxy's target, after the text, so that positions stay the text's own.
	return ruleTables(append(slices.Clip(data), "\n[target]\nport = 1\n"...), file, t.Name)
}

// ruleTables checks a rule set as finproxy check does (positioned problems) and returns
// its rule tables, each named PREFIX:RULE.
func ruleTables(data []byte, file, prefix string) ([]map[string]any, error) {
	cfg, err := config.Parse(data, file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Rule []map[string]any `toml:"rule"`
	}
	if _, err := toml.Decode(string(data), &doc); err != nil {
		return nil, err
	}
	if len(doc.Rule) != len(cfg.Rules) {
		return nil, fmt.Errorf("%s: %d rule tables for %d rules", file, len(doc.Rule), len(cfg.Rules))
	}
	for _, r := range doc.Rule {
		r["name"] = prefix + ":" + fmt.Sprint(r["name"])
	}
	return doc.Rule, nil
}

// presetRules maps finproxy's own faults: one toxic type per preset (lost-final-ack as
// lost_final_ack), its rules named TOXIC:RULE.
func presetRules(a toxicArgs) ([]map[string]any, error) {
	t := a.t
	preset := strings.ReplaceAll(t.Type, "_", "-")
	data, path, ok := configs.Read(preset)
	if !ok {
		return nil, &toxicError{http.StatusBadRequest, fmt.Sprintf("invalid toxic type %q: finproxy maps %s, and its presets as %s",
			t.Type, strings.Join(mappedTypes(), ", "), strings.ReplaceAll(strings.Join(configs.Names(), ", "), "-", "_"))}
	}
	rs, err := ruleTables(data, path, t.Name)
	if err != nil {
		return nil, err
	}
	if t.Toxicity < 1 {
		for _, r := range rs {
			r["probability"] = float64(t.Toxicity)
		}
	}
	return rs, nil
}

// mappedTypes lists the Toxiproxy toxic types finproxy maps, sorted.
func mappedTypes() []string {
	out := make([]string, 0, len(toxicTypes))
	for name := range toxicTypes {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
