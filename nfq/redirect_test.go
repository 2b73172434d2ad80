package nfq

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	loRedirect  = Redirect{netip.MustParseAddrPort("127.0.0.1:18080"), netip.MustParseAddrPort("127.0.0.1:8080")}
	anyRedirect = Redirect{netip.MustParseAddrPort("0.0.0.0:18081"), netip.MustParseAddrPort("10.1.2.3:8081")}
	v6Redirect  = Redirect{netip.MustParseAddrPort("[::1]:18082"), netip.MustParseAddrPort("[::1]:8082")}
)

// The DNAT rules go into nat OUTPUT and PREROUTING, tagged with the owner, and Remove
// takes out exactly them.
func TestRedirectsInstallRemove(t *testing.T) {
	f4, f6 := seeded(t), NewFake()
	init4 := f4.Rules()
	self, err := Self()
	must(t, err)
	rd, err := InstallRedirects(f4, f6, self, []Redirect{loRedirect, anyRedirect, v6Redirect})
	must(t, err)
	c := self.comment()
	want := []string{
		`-t nat -A PREROUTING -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -m comment --comment "` + c + `" -j DNAT --to-destination 127.0.0.1:8080`,
		`-t nat -A PREROUTING -p tcp -m tcp --dport 18081 -m comment --comment "` + c + `" -j DNAT --to-destination 10.1.2.3:8081`,
		`-t nat -A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -m comment --comment "` + c + `" -j DNAT --to-destination 127.0.0.1:8080`,
		`-t nat -A OUTPUT -p tcp -m tcp --dport 18081 -m comment --comment "` + c + `" -j DNAT --to-destination 10.1.2.3:8081`,
	}
	var got []string
	for _, r := range f4.Rules() {
		if strings.HasPrefix(r, "-t nat") {
			got = append(got, r)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("nat rules (-want +got):\n%s", d)
	}
	if r := f6.Rules(); len(r) != 2 || !strings.Contains(r[0], "-d ::1/128") || !strings.Contains(r[0], "--to-destination [::1]:8082") {
		t.Errorf("ip6tables rules: %q, want the redirect of [::1]:18082 in OUTPUT and PREROUTING", r)
	}
	if n := len(rd.Rules()); n != 6 {
		t.Errorf("Rules() lists %d rules, want 6: %q", n, rd.Rules())
	}
	must(t, rd.Remove())
	must(t, rd.Remove()) // idempotent
	if d := cmp.Diff(init4, f4.Rules()); d != "" {
		t.Errorf("after Remove (-want +got):\n%s", d)
	}
	if r := f6.Rules(); len(r) != 0 {
		t.Errorf("ip6tables after Remove: %q", r)
	}
}

// A failed insert undoes the part already in place; bad redirects are refused by name.
func TestRedirectsAtomicAndValidated(t *testing.T) {
	f := seeded(t)
	init := f.Rules()
	f.FailOn = func(op, table, chain string, spec []string) error {
		if op == "Insert" && slices.Contains(spec, "18081") {
			return &FakeError{Cmd: op, Msg: "boom"}
		}
		return nil
	}
	if _, err := InstallRedirects(f, nil, Owner{}, []Redirect{loRedirect, anyRedirect}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("InstallRedirects with a failing insert: %v, want the failure", err)
	}
	f.FailOn = nil
	if d := cmp.Diff(init, f.Rules()); d != "" {
		t.Errorf("after a failed install (-want +got):\n%s", d)
	}
	for _, r := range []Redirect{
		{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("0.0.0.0:2")},
		{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:2")},
		{netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.1:2")},
	} {
		if _, err := InstallRedirects(f, NewFake(), Owner{}, []Redirect{r}); err == nil || !strings.Contains(err.Error(), r.String()) {
			t.Errorf("redirect %v: %v, want an error naming it", r, err)
		}
	}
	if _, err := InstallRedirects(f, nil, Owner{}, []Redirect{v6Redirect}); err == nil || !strings.Contains(err.Error(), "ipv6") {
		t.Errorf("an IPv6 redirect without ip6tables: %v", err)
	}
}

// The watchdog's RemoveOwned takes a dead run's redirections and no one else's; Cleanup
// spares those of a live run and removes those of a dead one.
func TestRedirectsOwnedCleanup(t *testing.T) {
	f := seeded(t)
	init := f.Rules()
	self, err := Self()
	must(t, err)
	dead := Owner{PID: self.PID, Start: self.Start + 1}
	_, err = InstallRedirects(f, nil, dead, []Redirect{anyRedirect})
	must(t, err)
	live, err := InstallRedirects(f, nil, self, []Redirect{loRedirect})
	must(t, err)
	withLive := f.Rules()
	removed, err := RemoveOwned(f, dead)
	must(t, err)
	if len(removed) != 2 {
		t.Errorf("RemoveOwned(dead) removed %q, want its 2 nat rules", removed)
	}
	_, err = InstallRedirects(f, nil, dead, []Redirect{anyRedirect})
	must(t, err)
	removed, _, err = Cleanup(f, false)
	must(t, err)
	if len(removed) != 2 || !strings.Contains(removed[0], "nat: -A ") || !strings.Contains(removed[0], "18081") {
		t.Errorf("Cleanup removed %q, want the dead run's 2 nat rules", removed)
	}
	if len(f.Rules()) != len(withLive)-2 {
		t.Errorf("rules after Cleanup: %q, want those before the dead run's 2", f.Rules())
	}
	for _, r := range live.Rules() {
		if !strings.Contains(strings.Join(f.Rules(), "\n"), strings.TrimPrefix(r, "ipv4: nat ")) {
			t.Errorf("Cleanup removed the live run's %s", r)
		}
	}
	_, _, err = Cleanup(f, true)
	must(t, err)
	if d := cmp.Diff(init, f.Rules()); d != "" {
		t.Errorf("after Cleanup --force (-want +got):\n%s", d)
	}
}

// Redirected (Local mode): the segments toward the server are taken in POSTROUTING once
// DNAT translated them; several ports are one multiport match.
func TestHooksRedirectedPorts(t *testing.T) {
	f := NewFake()
	spec := NewHookSpec(Local, 9)
	spec.Port, spec.Ports, spec.Redirected = 8080, []uint16{8081}, true
	h, err := Install(f, nil, spec)
	must(t, err)
	want := []string{
		"-t mangle -A INPUT ! -i lo -p tcp -m multiport --dports 8080,8081 -m tcp ! --tcp-flags FIN,SYN,RST NONE -m comment --comment finproxy -j FINPROXY-Q9",
		"-t mangle -A INPUT ! -i lo -p tcp -m multiport --sports 8080,8081 -m tcp ! --tcp-flags FIN,SYN,RST NONE -m comment --comment finproxy -j FINPROXY-Q9",
		"-t mangle -A OUTPUT -p tcp -m multiport --dports 8080,8081 -m tcp ! --tcp-flags FIN,SYN,RST NONE -m comment --comment finproxy -j FINPROXY-Q9",
		"-t mangle -A OUTPUT -p tcp -m multiport --sports 8080,8081 -m tcp ! --tcp-flags FIN,SYN,RST NONE -m comment --comment finproxy -j FINPROXY-Q9",
		"-t mangle -A POSTROUTING -p tcp -m conntrack --ctstate DNAT --ctdir ORIGINAL -m multiport --dports 8080,8081 -m tcp ! --tcp-flags FIN,SYN,RST NONE -m comment --comment finproxy -j FINPROXY-Q9",
	}
	var got []string
	for _, r := range f.Rules() {
		if !strings.Contains(r, " -N ") && !strings.Contains(r, "-A FINPROXY") {
			got = append(got, r)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("jumps (-want +got):\n%s", d)
	}
	must(t, h.Remove())
	if r := f.Rules(); len(r) != 0 {
		t.Errorf("after Remove: %q", r)
	}
	spec.Mode = Forward
	if _, err := Install(f, nil, spec); err == nil || !strings.Contains(err.Error(), "Redirected") {
		t.Errorf("Redirected in Forward mode: %v, want refused", err)
	}
}

// A listen port a live finproxy of another owner redirects already is refused, naming it;
// a dead one's is not in the way.
func TestRedirectsConflict(t *testing.T) {
	f := NewFake()
	self, err := Self()
	must(t, err)
	parent := Owner{PID: os.Getppid()}
	parent.Start, _, err = procStat(parent.PID) // the go test binary's parent: alive
	must(t, err)
	_, err = InstallRedirects(f, nil, parent, []Redirect{loRedirect})
	must(t, err)
	if _, err := InstallRedirects(f, nil, self, []Redirect{anyRedirect, {Listen: netip.MustParseAddrPort("0.0.0.0:18080"), Upstream: loRedirect.Upstream}}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", parent.PID)) {
		t.Errorf("a listen port another live run redirects: %v, want refused naming it", err)
	}
	if n := strings.Count(strings.Join(f.Rules(), "\n"), "18081"); n != 0 {
		t.Errorf("the refused install left %d rules", n)
	}
	dead := Owner{PID: self.PID, Start: self.Start + 1}
	f2 := NewFake()
	_, err = InstallRedirects(f2, nil, dead, []Redirect{loRedirect})
	must(t, err)
	if _, err := InstallRedirects(f2, nil, self, []Redirect{loRedirect}); err != nil {
		t.Errorf("a dead run's redirection in the way: %v", err)
	}
}
