package control

import (
	"context"
	"slices"
	"strings"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

// counter returns what the rule of that name did so far.
func (r *rig) counter(name string) (matched, dropped, delayed uint64) {
	r.t.Helper()
	cs, err := r.c.Counters(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, c := range cs.Rules {
		if c.Rule == name {
			return c.Matched, c.Dropped, c.Delayed
		}
	}
	return 0, 0, 0
}

// dataFrom opens a connection from client port cp and sends a data segment from the
// server; it returns whether that segment was accepted at once.
func (r *rig) serverData(cp uint16) bool {
	r.send(cliAddr, srvAddr, cp, 8080, 1000, 0, tSYN)
	r.send(srvAddr, cliAddr, 8080, cp, 5000, 1001, tSYN|tACK)
	r.send(cliAddr, srvAddr, cp, 8080, 1001, 5001, tACK)
	return r.sendData(srvAddr, cliAddr, 8080, cp, 5001, 1001)
}

// Toxiproxy's own Go client (v2.12.0) drives finproxy: proxies and toxics become rule
// sets that act on the next segments; what finproxy cannot do is refused with a reason.
func TestToxiproxyClient(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	v, err := tc.Version()
	if err != nil || !strings.Contains(string(v), `"version"`) || !strings.Contains(string(v), ToxiproxyVersion) {
		t.Errorf("version %s, %v", v, err)
	}
	if _, err := tc.CreateProxy("redis", "127.0.0.1:8080", "10.0.0.2:8080"); err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), "share port 8080") {
		t.Errorf("proxy redirecting to the same port: %v, want a 400 naming the port", err)
	}
	p, err := tc.CreateProxy("redis", "10.0.0.2:8080", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hooks(r.ipt), "--dport 8080") {
		t.Errorf("no hooks for the proxy's upstream:\n%s", hooks(r.ipt))
	}
	if _, err := tc.CreateProxy("redis", "10.0.0.2:8080", "10.0.0.2:8080"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Errorf("second proxy of the same name: %v, want 409", err)
	}
	if _, err := tc.CreateProxy("other", "127.0.0.1:18080", "10.0.0.2:8080"); err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "upstream port 8080") {
		t.Errorf("second proxy on the same upstream: %v, want a 409", err)
	}

	// timeout 0 downstream: the server's data stops.
	if _, err := p.AddToxic("", "timeout", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if r.serverData(40000) {
		t.Error("server data accepted under the timeout toxic")
	}
	if _, dropped, _ := r.counter("timeout_downstream"); dropped != 1 {
		t.Errorf("timeout_downstream dropped %d, want 1", dropped)
	}
	if err := p.RemoveToxic("timeout_downstream"); err != nil {
		t.Fatal(err)
	}
	if !r.serverData(40001) {
		t.Error("server data dropped after the toxic was removed")
	}

	// latency, slow_close: delays (the verdict comes later).
	if _, err := p.AddToxic("lat", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 50, "jitter": 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AddToxic("sc", "slow_close", "upstream", 1, toxiproxy.Attributes{"delay": 30}); err != nil {
		t.Fatal(err)
	}
	if r.serverDataNoWait(40002) {
		t.Error("server data accepted at once under latency 50ms")
	}
	if _, _, delayed := r.counter("lat"); delayed != 1 {
		t.Errorf("lat delayed %d, want 1", delayed)
	}
	// UpdateToxic: toxicity 0 switches it off.
	if _, err := p.UpdateToxic("lat", 0, toxiproxy.Attributes{}); err != nil {
		t.Fatal(err)
	}
	if !r.serverData(40003) {
		t.Error("server data delayed by a toxic of toxicity 0")
	}
	toxics, err := p.Toxics()
	if err != nil || len(toxics) != 2 || toxics[0].Name != "lat" || toxics[0].Toxicity != 0 || toxics[1].Attributes["delay"] != float64(30) {
		t.Errorf("toxics %+v, %v", toxics, err)
	}

	// finproxy's own faults as toxic types.
	if _, err := p.AddToxic("laf", "lost_final_ack", "downstream", 1, nil); err != nil {
		t.Fatal(err)
	}
	rs, err := r.c.Rules(context.Background())
	if err != nil || !strings.Contains(rs.Source, `"laf:drop-final-ack"`) {
		t.Errorf("rule set after lost_final_ack: %+v, %v", rs, err)
	}
	for _, bad := range []struct{ typ, want string }{
		{"slicer", "does not copy the stream"},
		{"limiter", "invalid toxic type"},
		{"nonesuch", "invalid toxic type"},
	} {
		if _, err := p.AddToxic("", bad.typ, "downstream", 1, toxiproxy.Attributes{"rate": 1}); err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("toxic %s: %v, want a 400 with %q", bad.typ, err, bad.want)
		}
	}
	if _, err := p.AddToxic("", "latency", "sideways", 1, nil); err == nil || !strings.Contains(err.Error(), "stream") {
		t.Errorf("bad stream: %v", err)
	}

	// Disabled: every segment answered by RSTs (the rule), proxies listed with toxics.
	if err := p.Disable(); err != nil {
		t.Fatal(err)
	}
	proxies, err := tc.Proxies()
	if err != nil || len(proxies) != 1 || proxies["redis"].Enabled || len(proxies["redis"].ActiveToxics) != 3 {
		t.Errorf("proxies %+v, %v", proxies, err)
	}
	if rs, _ := r.c.Rules(context.Background()); len(rs.Rules) == 0 || rs.Rules[0].Name != "proxy-disabled" || rs.Rules[0].Action != "inject-rst" {
		t.Errorf("disabled proxy's rules: %+v", rs.Rules)
	}

	if err := tc.ResetState(); err != nil {
		t.Fatal(err)
	}
	proxies, err = tc.Proxies()
	if err != nil || !proxies["redis"].Enabled || len(proxies["redis"].ActiveToxics) != 0 {
		t.Errorf("after reset: %+v, %v", proxies, err)
	}
	if !r.serverData(40004) {
		t.Error("server data not accepted after reset")
	}
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if h := hooks(r.ipt); h != "" {
		t.Errorf("hooks left after the proxy was deleted:\n%s", h)
	}
	if _, err := tc.Proxy("redis"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("deleted proxy: %v, want 404", err)
	}
}

// Populate creates the proxies of a list (Toxiproxy's /populate).
func TestToxiproxyPopulate(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	ps, err := tc.Populate([]toxiproxy.Proxy{{Name: "web", Listen: "10.0.0.2:8080", Upstream: "10.0.0.2:8080", Enabled: true}})
	if err != nil || len(ps) != 1 || ps[0].Name != "web" {
		t.Fatalf("populate: %+v, %v", ps, err)
	}
	if !strings.Contains(hooks(r.ipt), "--dport 8080") {
		t.Errorf("no hooks after populate:\n%s", hooks(r.ipt))
	}
}

// Several proxies, some redirected: one rule set whose target holds every upstream, each
// toxic acting on its proxy's connections only; the redirections follow the proxies.
func TestToxiproxySeveral(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	web, err := tc.CreateProxy("web", "10.0.0.2:8080", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := tc.CreateProxy("pg", "127.0.0.1:15432", "10.0.0.2:5432")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(r.svc.Hooks(), "\n")
	for _, want := range []string{"--dports 8080,5432", "nat -A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15432",
		"--to-destination 10.0.0.2:5432", "-A POSTROUTING"} {
		if !strings.Contains(all, want) {
			t.Errorf("hooks lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "--dport 8080 -m comment --comment finproxy -j DNAT") || strings.Count(all, "DNAT --to") != 2 {
		t.Errorf("want the 2 DNAT rules of pg alone:\n%s", all)
	}
	if rs, err := r.c.Rules(context.Background()); err != nil || rs.Target.Port != 8080 || len(rs.Target.Ports) != 1 || rs.Target.Ports[0] != 5432 {
		t.Errorf("rule set's target: %+v, %v; want ports 8080 and 5432", rs.Target, err)
	}
	if _, err := tc.CreateProxy("cache", "127.0.0.1:5432", "10.0.0.2:6379"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Errorf("a proxy listening on another's upstream port: %v, want 409", err)
	}
	// The same toxic name on both proxies; web's acts on port 8080 only.
	if _, err := web.AddToxic("to", "timeout", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.AddToxic("to", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 10}); err != nil {
		t.Fatal(err)
	}
	if r.serverData(40000) {
		t.Error("web's server data accepted under web's timeout toxic")
	}
	if _, dropped, _ := r.counter("web:to"); dropped != 1 {
		t.Errorf("web:to dropped %d, want 1", dropped)
	}
	if m, _, _ := r.counter("pg:to"); m != 0 {
		t.Errorf("pg's toxic matched %d segments of web's connection", m)
	}
	if err := pg.Delete(); err != nil {
		t.Fatal(err)
	}
	if all := strings.Join(r.svc.Hooks(), "\n"); strings.Contains(all, "DNAT") || strings.Contains(all, "5432") {
		t.Errorf("pg's redirection or port left after it was deleted:\n%s", all)
	}
	if err := web.Delete(); err != nil {
		t.Fatal(err)
	}
	if rs := r.ipt.Rules(); len(rs) != 0 {
		t.Errorf("left after every proxy was deleted: %q", rs)
	}
}

// A native rule set forgets the proxies: their redirections go with them.
func TestToxiproxyNativeReplaceDropsRedirects(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	if _, err := tc.CreateProxy("pg", "127.0.0.1:15432", "10.0.0.2:5432"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.svc.Hooks(), "\n"), "DNAT") {
		t.Fatalf("no redirection for the proxy:\n%s", strings.Join(r.svc.Hooks(), "\n"))
	}
	if _, err := r.c.LoadPreset(context.Background(), "lost-fin", 8080); err != nil {
		t.Fatal(err)
	}
	if h := strings.Join(r.svc.Hooks(), "\n"); strings.Contains(h, "DNAT") || strings.Contains(h, "15432") {
		t.Errorf("the forgotten proxy's redirection is still there:\n%s", h)
	}
	if ps, err := tc.Proxies(); err != nil || len(ps) != 0 {
		t.Errorf("proxies after a native rule set: %v, %v", ps, err)
	}
}

// The toxics with a timer or a byte count: their rules, and what finproxy refuses of them
// with the attribute named.
func TestToxiproxyTimedToxics(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	p, err := tc.CreateProxy("db", "10.0.0.2:8080", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ, stream string
		attrs       toxiproxy.Attributes
		want        [][]string // the keys of each rule, in the rule set's TOML
	}{
		{"timeout", "downstream", toxiproxy.Attributes{"timeout": 1500}, [][]string{{`name = "t"`, `side = "server"`, `action = "stall"`, `reset = "1500ms"`}}},
		{"reset_peer", "upstream", toxiproxy.Attributes{"timeout": 250}, [][]string{
			{`name = "t"`, `side = "client"`, `payload = "some"`, `limit = 1`, `action = "inject-rst"`, `toward = "both"`, `segment = "drop"`, `delay = "250ms"`},
			{`name = "t:drop"`, `side = "client"`, `payload = "some"`, `action = "drop"`}}},
		{"limit_data", "downstream", toxiproxy.Attributes{"bytes": 4096}, [][]string{{`name = "t"`, `side = "server"`, `payload = "some"`, `action = "cut"`, `bytes = 4096`}}},
		{"bandwidth", "downstream", toxiproxy.Attributes{"rate": 100}, [][]string{{`name = "t"`, `side = "server"`, `payload = "some"`, `action = "pace"`, `rate = 100000`}}},
	} {
		if _, err := p.AddToxic("t", tc.typ, tc.stream, 1, tc.attrs); err != nil {
			t.Errorf("%s: %v", tc.typ, err)
			continue
		}
		rs, err := r.c.Rules(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tables := strings.Split(rs.Source, "[[rule]]")[1:]
		if len(tables) != len(tc.want) {
			t.Errorf("%s: %d rules, want %d:\n%s", tc.typ, len(tables), len(tc.want), rs.Source)
			continue
		}
		for i, keys := range tc.want {
			for _, k := range keys {
				if !strings.Contains(tables[i], k+"\n") {
					t.Errorf("%s: rule %d lacks %s:\n%s", tc.typ, i+1, k, rs.Source)
				}
			}
		}
		mustRemoveToxic(t, p, "t")
	}
	if _, err := p.AddToxic("bw0", "bandwidth", "downstream", 1, toxiproxy.Attributes{"rate": 0}); err != nil {
		t.Errorf("bandwidth 0 (no limit): %v", err)
	} else if rs, _ := r.c.Rules(context.Background()); len(rs.Rules) != 0 {
		t.Errorf("bandwidth 0 made rules: %+v", rs.Rules)
	}
	mustRemoveToxic(t, p, "bw0")
	if _, err := p.AddToxic("n", "noop", "downstream", 1, nil); err != nil {
		t.Errorf("noop: %v", err)
	} else if rs, _ := r.c.Rules(context.Background()); len(rs.Rules) != 0 {
		t.Errorf("noop made rules: %+v", rs.Rules)
	}
	mustRemoveToxic(t, p, "n")
	for _, bad := range []struct {
		typ      string
		toxicity float32
		attrs    toxiproxy.Attributes
		want     string
	}{
		{"limit_data", 1, toxiproxy.Attributes{"bytes": -1}, "attribute bytes = -1: want a whole number"},
		{"limit_data", 1, toxiproxy.Attributes{"bytes": 1.5}, "attribute bytes = 1.5"},
		{"bandwidth", 1, toxiproxy.Attributes{"rate": "fast"}, "attribute rate = fast"},
		{"timeout", 1, toxiproxy.Attributes{"timeout": -5}, "attribute timeout = -5"},
		{"timeout", 0.5, toxiproxy.Attributes{"timeout": 100}, "toxicity 0.5: Toxiproxy draws it once per connection"},
		{"reset_peer", 0.5, toxiproxy.Attributes{"timeout": 100}, "toxicity 0.5"},
		{"limit_data", 0.5, toxiproxy.Attributes{"bytes": 10}, "toxicity 0.5"},
		{"bandwidth", 0.5, toxiproxy.Attributes{"rate": 10}, "toxicity 0.5"},
	} {
		if _, err := p.AddToxic("", bad.typ, "downstream", bad.toxicity, bad.attrs); err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %v: %v, want a 400 with %q", bad.typ, bad.attrs, err, bad.want)
		}
	}
	if toxics, err := p.Toxics(); err != nil || len(toxics) != 0 {
		t.Errorf("toxics after the refusals: %+v, %v", toxics, err)
	}
}

func mustRemoveToxic(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	if err := p.RemoveToxic(name); err != nil {
		t.Fatal(err)
	}
}

// A toxic of type rules carries finproxy's own rule table (TOML text or JSON), checked
// as finproxy check checks a file: a problem is refused at its line and column.
func TestToxiproxyRulesToxic(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	p, err := tc.CreateProxy("db", "10.0.0.2:8080", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	text := "[[rule]]\nname = \"late-fin\"\nside = \"server\"\nhas_flags = \"FIN\"\naction = \"delay\"\ndelay = \"50ms\"\n"
	if _, err := p.AddToxic("mine", "rules", "downstream", 1, toxiproxy.Attributes{"rules": text}); err != nil {
		t.Fatal(err)
	}
	rs, err := r.c.Rules(context.Background())
	if err != nil || len(rs.Rules) != 1 || rs.Rules[0].Name != "mine:late-fin" || rs.Rules[0].Action != "delay" {
		t.Errorf("rules after a rules toxic: %+v, %v", rs.Rules, err)
	}
	mustRemoveToxic(t, p, "mine")
	js := []any{map[string]any{"name": "drop-data", "side": "client", "payload": "some", "action": "drop", "nth": 2}}
	if _, err := p.AddToxic("j", "rules", "downstream", 1, toxiproxy.Attributes{"rules": js}); err != nil {
		t.Fatal(err)
	}
	if rs, err := r.c.Rules(context.Background()); err != nil || len(rs.Rules) != 1 || rs.Rules[0].Name != "j:drop-data" || !strings.Contains(rs.Source, "nth = 2\n") {
		t.Errorf("rules after a JSON rules toxic: %+v, %v", rs.Rules, err)
	}
	mustRemoveToxic(t, p, "j")

	for _, bad := range []struct {
		attrs toxiproxy.Attributes
		want  string
	}{
		{toxiproxy.Attributes{"rules": "[[rule]]\nname = \"x\"\naction = \"dorp\"\n"}, "toxic bad attribute rules:3:10: rule[1].action: "},
		{toxiproxy.Attributes{"rules": "[[rule]]\nname = \"x\"\naction = \"delay\"\n"}, "toxic bad attribute rules:1:1: rule[1]"},
		{toxiproxy.Attributes{"rules": "[[rule]\n"}, "toxic bad attribute rules:2:7: expected end of table array name delimiter"}, // as finproxy check places it
		{toxiproxy.Attributes{"rules": []any{map[string]any{"name": "x", "action": "drop", "side": "left"}}}, "toxic bad attribute rules (JSON turned into TOML):"},
		{toxiproxy.Attributes{"rules": "[target]\nport = 9\n[[rule]]\nname = \"x\"\naction = \"drop\"\n"}, "key target: only [[rule]] tables"},
		{toxiproxy.Attributes{"rules": 7}, "attribute rules: a float64"},
		{toxiproxy.Attributes{}, "attribute rules is required"},
	} {
		_, err := p.AddToxic("bad", "rules", "downstream", 1, bad.attrs)
		if err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("rules %v: %v, want a 400 with %q", bad.attrs, err, bad.want)
		}
	}
	if _, err := p.AddToxic("half", "rules", "downstream", 0.5, toxiproxy.Attributes{"rules": text}); err == nil || !strings.Contains(err.Error(), "toxicity 0.5") {
		t.Errorf("rules toxic of toxicity 0.5: %v, want a 400 naming toxicity", err)
	}
	if toxics, err := p.Toxics(); err != nil || len(toxics) != 0 {
		t.Errorf("toxics after the refusals: %+v, %v", toxics, err)
	}
}

// A proxy moves in place (Toxiproxy's update of listen and upstream): its redirection and
// target follow, its toxics stay; a move onto another proxy's port is refused.
func TestToxiproxyMove(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	pg, err := tc.CreateProxy("pg", "127.0.0.1:15432", "10.0.0.2:5432")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateProxy("web", "10.0.0.2:8080", "10.0.0.2:8080"); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.AddToxic("lat", "latency", "downstream", 1, toxiproxy.Attributes{"latency": 20}); err != nil {
		t.Fatal(err)
	}
	pg.Upstream = "10.0.0.3:6543"
	if err := pg.Save(); err != nil {
		t.Fatalf("moving the upstream: %v", err)
	}
	all := strings.Join(r.svc.Hooks(), "\n")
	if !strings.Contains(all, "--dport 15432") || !strings.Contains(all, "--to-destination 10.0.0.3:6543") || strings.Contains(all, "10.0.0.2:5432") || strings.Contains(all, ",5432") {
		t.Errorf("hooks after the upstream moved to 10.0.0.3:6543:\n%s", all)
	}
	rs, err := r.c.Rules(context.Background())
	if err != nil || rs.Target.Port != 6543 && !slices.Contains(rs.Target.Ports, 6543) || !strings.Contains(rs.Source, `name = "pg:lat"`) || !strings.Contains(rs.Source, "server_port = 6543") {
		t.Errorf("rule set after the move: %+v %v\n%s", rs.Target, err, rs.Source)
	}
	pg.Listen = "127.0.0.1:16543"
	if err := pg.Save(); err != nil {
		t.Fatalf("moving the listen address: %v", err)
	}
	if all := strings.Join(r.svc.Hooks(), "\n"); !strings.Contains(all, "--dport 16543") || strings.Contains(all, "15432") {
		t.Errorf("hooks after listen moved to 16543:\n%s", all)
	}
	if p, err := tc.Proxy("pg"); err != nil || p.Listen != "127.0.0.1:16543" || p.Upstream != "10.0.0.3:6543" || len(p.ActiveToxics) != 1 {
		t.Errorf("proxy after the moves: %+v, %v", p, err)
	}
	pg.Upstream = "10.0.0.2:8080"
	if err := pg.Save(); err == nil || !strings.Contains(err.Error(), "HTTP 409") || !strings.Contains(err.Error(), "upstream port 8080") {
		t.Errorf("a move onto web's upstream port: %v, want 409", err)
	}
	if p, err := tc.Proxy("pg"); err != nil || p.Upstream != "10.0.0.3:6543" {
		t.Errorf("proxy after a refused move: %+v, %v", p, err)
	}
}

// Proxies whose upstreams share a port on different addresses: their toxics' rules name
// the address, each acting on its own proxy's connections; an upstream of no single
// address cannot share a port.
func TestToxiproxySharedPort(t *testing.T) {
	r := newRig(t, "")
	tc := toxiproxy.NewClient(r.url)
	a, err := tc.CreateProxy("a", "10.0.0.2:8080", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.CreateProxy("b", "10.0.0.3:8080", "10.0.0.3:8080"); err != nil {
		t.Fatalf("a second proxy on upstream port 8080 of another address: %v", err)
	}
	if _, err := tc.CreateProxy("c", "127.0.0.1:18080", "0.0.0.0:8080"); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Errorf("a proxy on port 8080 of any address: %v, want 409", err)
	}
	if _, err := a.AddToxic("to", "timeout", "downstream", 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	rs, err := r.c.Rules(context.Background())
	if err != nil || !strings.Contains(rs.Source, `server_address = "10.0.0.2"`) || rs.Target.Port != 8080 || len(rs.Target.Ports) != 0 {
		t.Errorf("rule set: %+v, %v\n%s", rs.Target, err, rs.Source)
	}
	if r.serverData(40000) {
		t.Error("a's server data accepted under a's timeout toxic")
	}
	other := [4]byte{10, 0, 0, 3}
	r.send(cliAddr, other, 40001, 8080, 1000, 0, tSYN)
	r.send(other, cliAddr, 8080, 40001, 5000, 1001, tSYN|tACK)
	r.send(cliAddr, other, 40001, 8080, 1001, 5001, tACK)
	if !r.sendData(other, cliAddr, 8080, 40001, 5001, 1001) {
		t.Error("b's server data dropped by a's toxic")
	}
	if m, dropped, _ := r.counter("a:to"); m != 1 || dropped != 1 {
		t.Errorf("a:to matched %d, dropped %d; want 1, 1", m, dropped)
	}
}
