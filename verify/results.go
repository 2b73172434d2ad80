package verify

import (
	"fmt"
	"strings"

	"github.com/finproxy/finproxy/config"
)

// Result is the outcome of one expectation of [expect]: one key of a side ("server
// states"), one kernel counter, one segment count, the number of incarnations.
type Result struct {
	// Key names the expectation ("server states", "kernel server TcpExtPAWSEstab",
	// "segments rule drop-final-ack verdict drop"), Want says what it wants
	// ("ESTABLISHED → CLOSE_WAIT"), Text both in a sentence ("server states:
	// ESTABLISHED → CLOSE_WAIT", "server exits with 0").
	Key  string `json:"key"`
	Want string `json:"want"`
	Text string `json:"text"`
	Pass bool   `json:"pass"`
	// Failures are what was seen instead, as Check says it, when it failed.
	Failures []string `json:"failures,omitempty"`
}

// Saw is the failures in one line.
func (r Result) Saw() string { return strings.Join(r.Failures, "; ") }

// Results checks every expectation of in.Expect on its own, in the order of the section
// (incarnations, each side's keys, the connections' keys, kernel counters, segments): a
// report can say which held. Check gives the same failures in one list.
func Results(in Input) []Result {
	e := in.Expect
	if e == nil {
		return nil
	}
	var out []Result
	one := func(key, want, text string, x config.Expect) {
		sub := in
		x.LeakThreshold = e.LeakThreshold
		sub.Expect = &x
		fails := Check(sub)
		out = append(out, Result{Key: key, Want: want, Text: text, Failures: fails, Pass: len(fails) == 0})
	}
	type sideOf struct {
		name string
		se   *config.SideExpect
		set  func(*config.Expect, *config.SideExpect)
	}
	sides := []sideOf{
		{"client", e.Client, func(x *config.Expect, se *config.SideExpect) { x.Client = se }},
		{"server", e.Server, func(x *config.Expect, se *config.SideExpect) { x.Server = se }},
	}
	if e.Incarnations > 0 {
		want := fmt.Sprintf("%d connections on the 4-tuple", e.Incarnations)
		one("incarnations", want, want, config.Expect{Incarnations: e.Incarnations})
	}
	for _, ce := range e.Connections {
		n := ce.Incarnation
		sides = append(sides,
			sideOf{fmt.Sprintf("incarnation %d client", n), ce.Client, func(x *config.Expect, se *config.SideExpect) {
				x.Connections = []*config.ConnExpect{{Incarnation: n, Client: se}}
			}},
			sideOf{fmt.Sprintf("incarnation %d server", n), ce.Server, func(x *config.Expect, se *config.SideExpect) {
				x.Connections = []*config.ConnExpect{{Incarnation: n, Server: se}}
			}})
	}
	for _, s := range sides {
		if s.se == nil {
			continue
		}
		for _, item := range sideItems(s.se) {
			var x config.Expect
			s.set(&x, &item.se)
			one(s.name+" "+item.key, item.want, s.name+" "+item.text, x)
		}
	}
	for _, k := range e.Kernel {
		one("kernel "+k.String(), k.CountText(), fmt.Sprintf("kernel %s: %s", &k, k.CountText()), config.Expect{Kernel: []config.KernelExpect{k}})
	}
	for _, sx := range e.Segments {
		one("segments "+sx.String(), sx.CountText(), fmt.Sprintf("segments %s: %s", sx, sx.CountText()), config.Expect{Segments: []*config.SegmentExpect{sx}})
	}
	return out
}

// sideItem is one key of a side's expectations on its own.
type sideItem struct {
	key, want, text string
	se              config.SideExpect
}

// sideItems splits se into its keys.
func sideItems(se *config.SideExpect) []sideItem {
	var out []sideItem
	one := func(key, want string, x config.SideExpect) { out = append(out, sideItem{key, want, want, x}) }
	if len(se.States) > 0 {
		want := strings.Join(se.States, " → ")
		out = append(out, sideItem{"states", want, "states: " + want, config.SideExpect{States: se.States}})
	}
	if len(se.Absent) > 0 {
		one("absent", "never in "+strings.Join(se.Absent, ", "), config.SideExpect{Absent: se.Absent})
	}
	for _, st := range se.RetransmitsIn {
		one("retransmits_in", "retransmits in "+st, config.SideExpect{RetransmitsIn: []string{st}})
	}
	if se.NoRetransmits {
		one("no_retransmits", "retransmits nothing", config.SideExpect{NoRetransmits: true})
	}
	if se.ResetsSent != nil {
		one("resets_sent", yesNo(*se.ResetsSent, "sends a RST", "sends no RST"), config.SideExpect{ResetsSent: se.ResetsSent})
	}
	if se.ResetsReceived != nil {
		one("resets_received", yesNo(*se.ResetsReceived, "receives a RST", "receives no RST"), config.SideExpect{ResetsReceived: se.ResetsReceived})
	}
	for _, d := range se.MaxDwell {
		one("max_dwell", fmt.Sprintf("stays at most %v in %s", d.Limit, d.State), config.SideExpect{MaxDwell: []config.Dwell{d}})
	}
	for _, d := range se.MinDwell {
		one("min_dwell", fmt.Sprintf("stays at least %v in %s", d.Limit, d.State), config.SideExpect{MinDwell: []config.Dwell{d}})
	}
	if se.CloseWaitLeak != nil {
		one("close_wait_leak", yesNo(*se.CloseWaitLeak, "reported as a CLOSE_WAIT leak", "not reported as a CLOSE_WAIT leak"),
			config.SideExpect{CloseWaitLeak: se.CloseWaitLeak})
	}
	if se.Exit != nil || se.ExitStopped {
		one("exit", ExitText(se), config.SideExpect{Exit: se.Exit, ExitStopped: se.ExitStopped})
	}
	return out
}

// ExitText says what an exit expectation wants: "exits with 0", "stopped by the lab".
func ExitText(se *config.SideExpect) string {
	if se.ExitStopped {
		return "stopped by the lab"
	}
	if se.Exit == nil {
		return "any exit"
	}
	return fmt.Sprintf("exits with %d", *se.Exit)
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
