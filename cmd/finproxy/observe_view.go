package main

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/finproxy/finproxy/observe"
	"golang.org/x/term"
)

// Human views of `finproxy watch`: plain lines (not a terminal) and a table redrawn in
// place (a terminal).

// roleCache names the side of a socket's events: "client" (it sent the SYN) or
// "server", from the events that tell, else as the Observer guesses (the end on a
// watched port is the server, else the lower port).
type roleCache struct {
	ports []uint16
	roles map[[2]netip.AddrPort]string
}

func (c *roleCache) role(ev observe.Event, local, remote netip.AddrPort) string {
	if c.roles == nil || len(c.roles) > 1<<16 {
		c.roles = map[[2]netip.AddrPort]string{}
	}
	k := [2]netip.AddrPort{local, remote}
	r := ""
	switch e := ev.(type) {
	case observe.StateChange:
		switch {
		case e.New == observe.SynSent || e.Old == observe.SynSent:
			r = "client"
		case e.Old == observe.Listen && e.New == observe.SynRecv:
			r = "server"
		}
	case observe.Retransmit:
		switch {
		case e.SynAck:
			r = "server"
		case e.State == observe.SynSent:
			r = "client"
		}
	}
	if r == "" {
		if known, ok := c.roles[k]; ok {
			return known
		}
		lp, rp := slices.Contains(c.ports, local.Port()), slices.Contains(c.ports, remote.Port())
		switch {
		case lp && !rp:
			r = "server"
		case rp && !lp:
			r = "client"
		case local.Port() < remote.Port():
			r = "server"
		default:
			r = "client"
		}
	}
	c.roles[k] = r
	c.roles[[2]netip.AddrPort{remote, local}] = map[string]string{"client": "server", "server": "client"}[r]
	return r
}

// lineView prints one line per event, and one per leak when it is found.
type lineView struct {
	w       io.Writer
	wc      *watchConfig
	roles   roleCache
	entered map[[2]netip.AddrPort]time.Time // when each socket entered its current state
	start   time.Time
}

func newLineView(w io.Writer, wc *watchConfig) *lineView {
	return &lineView{w: w, wc: wc, roles: roleCache{ports: wc.filter.Ports}, entered: map[[2]netip.AddrPort]time.Time{}, start: time.Now()}
}

// eventLine describes an event: its time, the connection (client -> server), the side
// and what happened. entered tracks state entry times for the dwell.
func eventLine(ev observe.Event, roles *roleCache, entered map[[2]netip.AddrPort]time.Time) (string, bool) {
	var meta observe.EventMeta
	var what string
	switch e := ev.(type) {
	case observe.StateChange:
		meta = e.EventMeta
		what = fmt.Sprintf("%s -> %s", e.Old, e.New)
		ts := e.Time.Format("15:04:05.000000")
		switch {
		case e.Dst.Port() == 0:
			return fmt.Sprintf("%s  listener %v  %s", ts, e.Src, what), true
		case e.Src.Port() == 0:
			// connect() enters SYN_SENT before it picks the source port.
			return fmt.Sprintf("%s  %v:* -> %v  client  %s", ts, e.Src.Addr(), e.Dst, what), true
		}
		k := [2]netip.AddrPort{e.Src, e.Dst}
		if since, ok := entered[k]; ok && e.Old != observe.Close && e.Time.After(since) {
			what += fmt.Sprintf("  after %s in %s", shortDur(e.Time.Sub(since)), e.Old)
		}
		switch {
		case e.Handoff:
			what = fmt.Sprintf("%s: full socket handed to a timewait socket", e.Old)
		case e.New == observe.Close:
			delete(entered, k)
		default:
			if len(entered) > 1<<16 {
				clear(entered)
			}
			entered[k] = e.Time
		}
		if e.Source == observe.SourceDiag {
			what += "  [sock_diag]"
		}
	case observe.Retransmit:
		meta = e.EventMeta
		what = "retransmit in " + e.State.String()
		if e.SynAck {
			what = "SYN-ACK retransmit (request socket)"
		}
	case observe.ResetSent:
		meta = e.EventMeta
		what = "RST sent"
		if e.State != observe.Unknown {
			what += " in " + e.State.String()
		}
		if e.Reason != "" {
			what += " (" + e.Reason + ")"
		}
	case observe.ResetReceived:
		meta = e.EventMeta
		what = "RST received"
	default:
		return "", false
	}
	side := roles.role(ev, meta.Src, meta.Dst)
	cl, sv := meta.Src, meta.Dst
	if side == "server" {
		cl, sv = sv, cl
	}
	return fmt.Sprintf("%s  %v -> %v  %-6s  %s", meta.Time.Format("15:04:05.000000"), cl, sv, side, what), true
}

func (v *lineView) event(ev observe.Event) {
	if l, ok := eventLine(ev, &v.roles, v.entered); ok {
		fmt.Fprintln(v.w, l)
	}
}

func (v *lineView) leak(l observe.Leak) {
	fmt.Fprintf(v.w, "%s  LEAK  %s\n", time.Now().Format("15:04:05.000000"), leakText(l))
}

func (v *lineView) tick(observe.Report, []*watchLeak) {}

func (v *lineView) finish(rep observe.Report, leaks []*watchLeak) {
	writeWatchSummary(v.w, rep, leaks, v.wc)
}

// leakText describes a leak: "CLOSE_WAIT for 5.2s  198.18.2.2:8080 <- 198.18.1.2:40112
// pid 812 (server)  recv-q 1  send-q 0".
func leakText(l observe.Leak) string {
	owner := "owner unknown"
	if l.Owner != nil {
		owner = fmt.Sprintf("pid %d (%s)", l.Owner.Pid, l.Owner.Comm)
	}
	return fmt.Sprintf("CLOSE_WAIT for %s  %v <- %v  %s  recv-q %d  send-q %d",
		shortDur(time.Duration(l.Age)), l.Local, l.Remote, owner, l.RecvQ, l.SendQ)
}

// writeWatchSummary ends the human views: how many connections, and every leak.
func writeWatchSummary(w io.Writer, rep observe.Report, leaks []*watchLeak, wc *watchConfig) {
	fmt.Fprintf(w, "watched %s: %d connection(s)", shortDur(rep.Taken.Sub(rep.Start)), len(rep.Connections))
	if len(leaks) == 0 {
		fmt.Fprintf(w, ", no socket in CLOSE_WAIT for %v or more\n", wc.closeWait)
	} else {
		fmt.Fprintf(w, ", %d CLOSE_WAIT leak(s) of %v or more:\n", len(leaks), wc.closeWait)
		for _, l := range leaks {
			state := "closed since"
			if l.Open {
				state = "still open"
			}
			fmt.Fprintf(w, "  %s  (%s)\n", leakText(l.Leak), state)
		}
	}
	if rep.Stats.LostEvents > 0 {
		fmt.Fprintf(w, "WARNING: the kernel's trace buffer lost %d events: some states may be missing\n", rep.Stats.LostEvents)
	}
}

// tableView redraws a table of the connections in place, about four times a second.
type tableView struct {
	f     *os.File
	wc    *watchConfig
	lines int // lines of the last frame, to move back over
}

func newTableView(f *os.File, wc *watchConfig) *tableView { return &tableView{f: f, wc: wc} }

func (v *tableView) event(observe.Event) {}
func (v *tableView) leak(observe.Leak)   {}

func (v *tableView) tick(rep observe.Report, leaks []*watchLeak) {
	width, height, err := term.GetSize(int(v.f.Fd()))
	if err != nil || width <= 0 || height <= 0 {
		width, height = 120, 40
	}
	frame := tableFrame(rep, leaks, v.wc, time.Now(), width, height-1)
	var b bytes.Buffer
	if v.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.lines) // back to the top of the last frame
	}
	b.WriteString("\r\x1b[J") // clear from there down
	for _, l := range frame {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	v.f.Write(b.Bytes())
	v.lines = len(frame)
}

func (v *tableView) finish(rep observe.Report, leaks []*watchLeak) {
	v.tick(rep, leaks)
	writeWatchSummary(v.f, rep, leaks, v.wc)
}

// tableFrame renders the table in at most height lines of at most width columns: a
// header, one row per connection (finished ones linger 5 s), then the leaks.
func tableFrame(rep observe.Report, leaks []*watchLeak, wc *watchConfig, now time.Time, width, height int) []string {
	const linger = 5 * time.Second
	var rows []observe.Connection
	hidden := 0
	for _, c := range rep.Connections {
		if finished(c) && now.Sub(lastEvent(c)) > linger {
			hidden++
			continue
		}
		rows = append(rows, c)
	}
	head := fmt.Sprintf("finproxy watch  %s  %s  connections: %d shown, %d finished  CLOSE_WAIT leaks (>= %v): %d  [%s]",
		describeFilter(wc.filter), shortDur(rep.Taken.Sub(rep.Start)), len(rows), hidden, wc.closeWait, len(leaks), describeSources(rep.Sources))
	var leakLines []string
	if len(leaks) > 0 {
		leakLines = append(leakLines, "LEAKS")
		for _, l := range leaks {
			state := "closed since"
			if l.Open {
				state = "open"
			}
			leakLines = append(leakLines, fmt.Sprintf("  %s  (%s)", leakText(l.Leak), state))
		}
	}
	room := height - 2 - len(leakLines) // title, column header
	if room < 1 {
		room = 1
	}
	cut := 0
	if len(rows) > room {
		cut = len(rows) - (room - 1)
		rows = rows[cut:]
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTION\tCLIENT\tSERVER\tRETX C/S\tRST S/R\tOWNER C / S")
	if cut > 0 {
		fmt.Fprintf(tw, "(%d older not shown)\t\t\t\t\t\n", cut)
	}
	for _, c := range rows {
		conn := fmt.Sprintf("%v -> %v", c.Client.Addr, c.Server.Addr)
		retx := fmt.Sprintf("%d/%d", len(c.Client.Retransmits), len(c.Server.Retransmits))
		sent := len(c.Client.ResetsSent) + len(c.Server.ResetsSent)
		recv := len(c.Client.ResetsReceived) + len(c.Server.ResetsReceived)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s / %s\n", conn, sideCell(c.Client), sideCell(c.Server), retx, sent, recv,
			ownerCell(c.Client.Owner), ownerCell(c.Server.Owner))
	}
	tw.Flush()
	lines := []string{head}
	lines = append(lines, strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")...)
	lines = append(lines, leakLines...)
	if len(lines) > height && height > 0 {
		lines = lines[:height]
	}
	for i, l := range lines {
		if r := []rune(l); len(r) > width {
			lines[i] = string(r[:width])
		}
	}
	return lines
}

// sideCell is a side's state and how long it has been there, with a timewait socket's
// timer.
func sideCell(s observe.Side) string {
	n := len(s.States)
	if n == 0 {
		return "-"
	}
	e := s.States[n-1]
	cell := e.State.String()
	if e.Ongoing {
		cell += " " + shortDur(time.Duration(e.Dwell))
	}
	if tw := s.Timewait; tw != nil && !tw.Gone {
		cell += fmt.Sprintf(" (timer %s)", shortDur(time.Duration(tw.Remaining)))
	} else if s.HandedToTimewait {
		cell += " (to timewait)" // sock_diag does not see that side's namespace
	}
	return cell
}

func ownerCell(p *observe.Process) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%d %s", p.Pid, p.Comm)
}

// finished reports whether both sides are gone: closed, with no timewait socket left.
func finished(c observe.Connection) bool {
	for _, s := range []observe.Side{c.Client, c.Server} {
		if n := len(s.States); n > 0 && s.States[n-1].State != observe.Close {
			return false
		}
		if s.HandedToTimewait || (s.Timewait != nil && !s.Timewait.Gone) {
			return false
		}
	}
	return true
}

func lastEvent(c observe.Connection) time.Time {
	t := c.FirstSeen
	for _, s := range []observe.Side{c.Client, c.Server} {
		if n := len(s.States); n > 0 && s.States[n-1].At.After(t) {
			t = s.States[n-1].At
		}
	}
	return t
}

// shortDur prints a duration with about three significant digits: 812ms, 5.2s, 3m05s.
func shortDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
