package nfq

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// owners returns this process as a live Owner and an Owner with its pid but another start
// time: a dead process whose pid was given to this one.
func owners(t *testing.T) (alive, dead Owner) {
	t.Helper()
	self, err := Self()
	must(t, err)
	if !self.Alive() {
		t.Fatalf("Self() = %+v is not alive", self)
	}
	dead = Owner{PID: self.PID, Start: self.Start + 1}
	if dead.Alive() {
		t.Fatalf("%+v (another start time) is alive", dead)
	}
	return self, dead
}

func TestOwnerAlive(t *testing.T) {
	if (Owner{}).Alive() {
		t.Error("the unknown owner is alive")
	}
	// A child that exited and was not reaped yet is a zombie: dead, although its pid exists.
	cmd := exec.Command("true")
	must(t, cmd.Start())
	start, _, err := procStat(cmd.Process.Pid)
	must(t, err)
	o := Owner{PID: cmd.Process.Pid, Start: start}
	for i := 0; o.Alive(); i++ {
		if i > 1000 {
			t.Fatal("a child that exited is still alive after 1s")
		}
		time.Sleep(time.Millisecond)
	}
	if _, state, err := procStat(o.PID); err != nil || state != 'Z' {
		t.Fatalf("child state %c, %v: the test wanted a zombie", state, err)
	}
	must(t, cmd.Wait())
	if o.Alive() {
		t.Error("a reaped child is alive")
	}
}

func TestParseComment(t *testing.T) {
	for _, tc := range []struct {
		in    string
		owner Owner
		ours  bool
	}{
		{"finproxy", Owner{}, true},
		{"finproxy pid=12 start=345", Owner{12, 345}, true},
		{"finproxy old", Owner{}, true},
		{"finproxy pid=x start=1", Owner{}, true},
		{"finproxyX", Owner{}, false},
		{"not finproxy", Owner{}, false},
	} {
		o, ours := parseComment(tc.in)
		if o != tc.owner || ours != tc.ours {
			t.Errorf("parseComment(%q) = %+v, %v; want %+v, %v", tc.in, o, ours, tc.owner, tc.ours)
		}
	}
	o := Owner{PID: 7, Start: 99}
	if got, _ := parseComment(o.comment()); got != o {
		t.Errorf("comment %q parses to %+v", o.comment(), got)
	}
}

func portSpec(mode Mode, queue, port uint16, o Owner, addrs ...string) HookSpec {
	s := NewHookSpec(mode, queue)
	s.Port = port
	s.Owner = o
	s.Logger = slog.New(slog.DiscardHandler)
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, netip.MustParsePrefix(a))
	}
	return s
}

// TestInstallRefusesOverlap: a run whose scope overlaps a live run's is refused with an
// error naming the live run, and changes nothing; a dead run's or a disjoint scope is no
// conflict; Stack installs anyway, with a warning.
func TestInstallRefusesOverlap(t *testing.T) {
	alive, dead := owners(t)
	other := Owner{PID: alive.PID, Start: alive.Start + 2} // the new run (never alive: it only needs to differ)
	for _, tc := range []struct {
		name     string
		first    HookSpec
		second   HookSpec
		conflict bool
	}{
		{"same port, other queue", portSpec(Local, 1, 8080, alive), portSpec(Local, 2, 8080, other), true},
		{"port vs address on it", portSpec(Local, 1, 8080, alive), portSpec(Local, 2, 8080, other, "10.1.2.3/32"), true},
		{"address vs any port", portSpec(Local, 1, 0, alive, "10.1.0.0/16"), portSpec(Local, 2, 8080, other, "10.1.2.3/32"), true},
		{"forward, same port", portSpec(Forward, 1, 443, alive), portSpec(Forward, 2, 443, other), true},
		{"other port", portSpec(Local, 1, 8080, alive), portSpec(Local, 2, 8081, other), false},
		{"disjoint addresses", portSpec(Local, 1, 8080, alive, "10.1.2.3/32"), portSpec(Local, 2, 8080, other, "10.1.2.4/32"), false},
		{"other family", portSpec(Local, 1, 8080, alive, "10.1.2.3/32"), portSpec(Local, 2, 8080, other, "fd00::1/128"), false},
		{"local vs forward", portSpec(Local, 1, 8080, alive), portSpec(Forward, 2, 8080, other), false},
		{"dead run", portSpec(Local, 1, 8080, dead), portSpec(Local, 2, 8080, other), false},
		{"unknown owner", portSpec(Local, 1, 8080, Owner{}), portSpec(Local, 2, 8080, other), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f4, f6 := seeded(t), seeded(t)
			_, err := Install(f4, f6, tc.first)
			must(t, err)
			before4, before6 := f4.Rules(), f6.Rules()
			h, err := Install(f4, f6, tc.second)
			var ce *ConflictError
			if !tc.conflict {
				if err != nil {
					t.Fatalf("Install: %v, want no conflict", err)
				}
				must(t, h.Remove())
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("Install = %v, want a *ConflictError", err)
			}
			want := fmt.Sprintf("another finproxy run (pid %d, queue 1)", alive.PID)
			if !strings.Contains(err.Error(), want) || ce.Other != alive || ce.Queue != 1 {
				t.Errorf("error %q (%+v) does not name the live run: want %q", err, ce, want)
			}
			if d := cmp.Diff(before4, f4.Rules()); d != "" {
				t.Errorf("refused Install changed ipv4 (-want +got):\n%s", d)
			}
			if d := cmp.Diff(before6, f6.Rules()); d != "" {
				t.Errorf("refused Install changed ipv6 (-want +got):\n%s", d)
			}

			var logs bytes.Buffer
			stack := tc.second
			stack.Stack = true
			stack.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			h, err = Install(f4, f6, stack)
			if err != nil {
				t.Fatalf("Install with Stack: %v", err)
			}
			if !strings.Contains(logs.String(), "stacked on request") || !strings.Contains(logs.String(), fmt.Sprint("other_pid=", alive.PID)) {
				t.Errorf("no warning naming the other run: %s", logs.String())
			}
			must(t, h.Remove())
			if d := cmp.Diff(before4, f4.Rules()); d != "" {
				t.Errorf("the live run's ipv4 hooks changed (-want +got):\n%s", d)
			}
		})
	}
}

// TestCleanupSparesLiveRuns: Cleanup removes the hooks of dead and unknown owners and
// keeps (and reports) those of a live one, unless forced.
func TestCleanupSparesLiveRuns(t *testing.T) {
	alive, dead := owners(t)
	f := seeded(t)
	init := f.Rules()
	_, err := Install(f, nil, portSpec(Local, 1, 8080, alive))
	must(t, err)
	withLive := f.Rules()
	for i, o := range []Owner{dead, {}} {
		s := portSpec(Forward, uint16(2+i), 9000, o)
		s.Scope = FromFIN
		_, err := Install(f, nil, s)
		must(t, err)
	}
	removed, live, err := Cleanup(f, false)
	must(t, err)
	if d := cmp.Diff(withLive, f.Rules()); d != "" {
		t.Errorf("after Cleanup: want only the live run's hooks left (-want +got):\n%s", d)
	}
	if want := []LiveRun{{Chain: ChainName(1), Owners: []Owner{alive}}}; !cmp.Equal(live, want) {
		t.Errorf("live = %+v, want %+v", live, want)
	}
	if n := len(removed); n != 2*2+2 {
		t.Errorf("removed %d items, want 6 (two chains, two jumps each):\n%s", n, strings.Join(removed, "\n"))
	}
	_, live, err = Cleanup(f, true)
	must(t, err)
	if len(live) != 0 {
		t.Errorf("forced Cleanup kept %+v", live)
	}
	if d := cmp.Diff(init, f.Rules()); d != "" {
		t.Errorf("after a forced Cleanup (-want +got):\n%s", d)
	}
}

// TestRemoveOwned: exactly the hooks of one owner go; those of another run stay, and
// nothing is removed when the owner removed its hooks itself (a later run on the same
// queue and port included).
func TestRemoveOwned(t *testing.T) {
	alive, dead := owners(t)
	f4, f6 := seeded(t), seeded(t)
	_, err := Install(f4, f6, portSpec(Local, 2, 9090, alive))
	must(t, err)
	only4, only6 := f4.Rules(), f6.Rules()
	s := portSpec(Local, 1, 8080, dead)
	s.Scope = All
	_, err = Install(f4, f6, s)
	must(t, err)
	for _, f := range []*Fake{f4, f6} {
		removed, err := RemoveOwned(f, dead)
		must(t, err)
		if len(removed) != 4+1 {
			t.Errorf("removed %d items, want 5 (four jumps, the chain):\n%s", len(removed), strings.Join(removed, "\n"))
		}
	}
	if d := cmp.Diff(only4, f4.Rules()); d != "" {
		t.Errorf("ipv4 (-want +got):\n%s", d)
	}
	if d := cmp.Diff(only6, f6.Rules()); d != "" {
		t.Errorf("ipv6 (-want +got):\n%s", d)
	}

	// The dead run had removed its hooks, and a new run hooks the same queue and port.
	h, err := Install(f4, f6, s)
	must(t, err)
	must(t, h.Remove())
	later := portSpec(Local, 1, 8080, Owner{PID: alive.PID, Start: alive.Start + 5})
	_, err = Install(f4, f6, later)
	must(t, err)
	want := f4.Rules()
	removed, err := RemoveOwned(f4, dead)
	must(t, err)
	if len(removed) != 0 || !slices.Equal(want, f4.Rules()) {
		t.Errorf("RemoveOwned of a run that removed its hooks removed %q", removed)
	}
	if _, err := RemoveOwned(f4, Owner{}); err == nil {
		t.Error("RemoveOwned of the unknown owner did not fail")
	}
}

// TestRemoveAfterForcedCleanup: a run whose hooks `cleanup --force` removed stops without
// an error (nothing of its hooks is left) and says they had gone.
func TestRemoveAfterForcedCleanup(t *testing.T) {
	alive, _ := owners(t)
	f4, f6 := seeded(t), seeded(t)
	init4 := f4.Rules()
	var logs bytes.Buffer
	s := portSpec(Local, 3, 8080, alive)
	s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	h, err := Install(f4, f6, s)
	must(t, err)
	for _, f := range []*Fake{f4, f6} {
		_, _, err := Cleanup(f, true)
		must(t, err)
	}
	if err := h.Remove(); err != nil {
		t.Errorf("Remove after a forced cleanup: %v", err)
	}
	if !strings.Contains(logs.String(), "removed by someone else") {
		t.Errorf("no warning that the hooks had gone: %s", logs.String())
	}
	if d := cmp.Diff(init4, f4.Rules()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
