package viz

import (
	"fmt"
	"html"
	"io"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/segment"
)

// WriteSVG draws the ladder as a self-contained SVG document: no script, no external
// reference, fonts by family name only. The same input gives the same bytes.
func WriteSVG(w io.Writer, l Ladder) error {
	lay := newLayout(l)
	var body svgw
	height := lay.draw(&body)
	var doc strings.Builder
	fmt.Fprintf(&doc, `<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s">`+"\n",
		f(width), f(height), f(width), f(height))
	title := l.Title
	if title == "" {
		title = "finproxy ladder diagram"
	}
	fmt.Fprintf(&doc, "<title>%s</title>\n", esc(title))
	doc.WriteString("<defs>\n")
	for _, c := range []string{colInk, colHeld, colInjected, colRewrite, colRetx, colDrop} {
		fmt.Fprintf(&doc, `<marker id="%s" viewBox="0 0 10 10" refX="9.5" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto"><path d="M0,0.8 L10,5 L0,9.2 z" fill="%s"/></marker>`+"\n", markerID(c), c)
	}
	doc.WriteString("</defs>\n")
	fmt.Fprintf(&doc, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	doc.WriteString(body.b.String())
	doc.WriteString("</svg>\n")
	_, err := io.WriteString(w, doc.String())
	return err
}

func markerID(colour string) string { return "ah" + strings.TrimPrefix(colour, "#") }

// svgw collects SVG elements.
type svgw struct{ b strings.Builder }

func (s *svgw) printf(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

// text writes one text element; attrs are extra attributes.
func (s *svgw) text(x, y float64, attrs, content string) {
	s.printf(`<text x="%s" y="%s" %s>%s</text>`+"\n", f(x), f(y), attrs, esc(content))
}

func (s *svgw) line(x1, y1, x2, y2 float64, attrs string) {
	s.printf(`<line x1="%s" y1="%s" x2="%s" y2="%s" %s/>`+"\n", f(x1), f(y1), f(x2), f(y2), attrs)
}

// esc escapes text for SVG.
func esc(s string) string { return html.EscapeString(s) }

// f formats a coordinate.
func f(v float64) string { return trimNum(v, 1) }

// fit shortens s to at most n characters, with an ellipsis.
func fit(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 2 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// wrap breaks s into lines of at most n characters, at spaces where it can.
func wrap(s string, n int) []string {
	var lines []string
	for utf8.RuneCountInString(s) > n {
		r := []rune(s)
		head := string(r[:n])
		cut := strings.LastIndex(head, " ")
		if cut <= 0 {
			cut = len(head)
		}
		lines = append(lines, strings.TrimRight(s[:cut], " "))
		s = strings.TrimLeft(s[cut:], " ")
	}
	return append(lines, s)
}

const (
	fontMono = `font-family="DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace"`
	fontSans = `font-family="DejaVu Sans, Helvetica, Arial, Liberation Sans, sans-serif"`
)

func mono(size float64, fill string) string {
	return fmt.Sprintf(`%s font-size="%s" fill="%s"`, fontMono, f(size), fill)
}

func sans(size float64, fill string) string {
	return fmt.Sprintf(`%s font-size="%s" fill="%s"`, fontSans, f(size), fill)
}

func addrText(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// draw writes the whole picture and returns its height.
func (lay *layout) draw(s *svgw) float64 {
	l := lay.l
	maxChars := chars(width - 2*margin)

	// The header: title and outcome, subtitle, the connection, the expectations.
	y := margin + 16
	title := l.Title
	if title == "" {
		title = "connection"
	}
	s.printf(`<text x="%s" y="%s" %s font-weight="bold">%s`, f(margin), f(y), sans(18, colInk), esc(title))
	if l.Pass != nil {
		if *l.Pass {
			s.printf(`<tspan dx="12" fill="%s">PASS</tspan>`, colPass)
		} else {
			s.printf(`<tspan dx="12" fill="%s">FAIL</tspan>`, colFail)
		}
	}
	s.printf("</text>\n")
	for _, line := range wrap(l.Subtitle, 150) { // 13 px proportional text
		if line == "" {
			continue
		}
		y += 18
		s.text(margin, y, sans(13, colInk), line)
	}
	if lay.client.Addr.IsValid() {
		y += 18
		conn := fmt.Sprintf("%v → %v", lay.client.Addr, lay.server.Addr)
		if l.Conn != nil && l.Conn.Incarnation > 1 {
			conn += fmt.Sprintf(" (incarnation %d of this 4-tuple)", l.Conn.Incarnation)
		}
		s.text(margin, y, mono(12, colGrey), conn)
	}
	if len(l.Expectations) > 0 {
		y += 26
		s.printf(`<text x="%s" y="%s" %s font-weight="bold">expected</text>`+"\n", f(margin), f(y), sans(13, colInk))
		for _, e := range l.Expectations {
			mark, col, class := "✓", colPass, "pass"
			switch {
			case e.Skipped:
				mark, col, class = "–", colGrey, "skipped"
			case !e.Pass:
				mark, col, class = "✗", colFail, "fail"
			}
			y += 18
			s.printf(`<g class="expect %s">`+"\n", class)
			s.printf(`<text x="%s" y="%s" %s font-weight="bold">%s</text>`+"\n", f(margin+4), f(y), sans(13, col), mark)
			for i, line := range wrap(e.Text, maxChars-4) {
				if i > 0 {
					y += 16
				}
				s.text(margin+22, y, mono(12, colInk), line)
			}
			if (!e.Pass || e.Skipped) && e.Detail != "" {
				dcol := colFail
				if e.Skipped {
					dcol = colGrey
				}
				for _, line := range wrap(e.Detail, maxChars-6) {
					y += 16
					s.text(margin+36, y, mono(12, dcol), line)
				}
			}
			s.printf("</g>\n")
		}
	}

	// The column heads.
	y += 40
	for _, c := range []struct {
		x          float64
		name, addr string
	}{{xClient, "client", addrText(lay.client.Addr)}, {xMid, "finproxy", l.Finproxy}, {xServer, "server", addrText(lay.server.Addr)}} {
		s.printf(`<text x="%s" y="%s" text-anchor="middle" %s font-weight="bold">%s</text>`+"\n", f(c.x), f(y), sans(15, colInk), esc(c.name))
		if c.addr != "" {
			s.printf(`<text x="%s" y="%s" text-anchor="middle" %s>%s</text>`+"\n", f(c.x), f(y+16), mono(11, colGrey), esc(c.addr))
		}
	}
	lineTop := y + 26
	lay.shift(lineTop + 26)
	if len(lay.evs) == 0 {
		lay.end = lineTop + 70
		s.printf(`<text x="%s" y="%s" text-anchor="middle" %s>nothing was observed and no segment was queued</text>`+"\n",
			f(xMid), f(lineTop+40), sans(13, colGrey))
	}
	lay.drawLines(s, lineTop)
	lay.drawCuts(s)
	lay.drawWaits(s)
	for _, sg := range lay.segs {
		lay.drawSeg(s, sg)
	}
	lay.drawSides(s)
	lay.drawRuler(s)
	return lay.drawLegend(s, lay.end+30)
}

// shift moves the computed positions down to start at top.
func (lay *layout) shift(top float64) {
	d := top - lay.top
	for _, e := range lay.evs {
		e.y += d
	}
	for _, sg := range lay.segs {
		sg.y0 += d
		sg.y1 += d
	}
	for i := range lay.cuts {
		lay.cuts[i].y0 += d
		lay.cuts[i].y1 += d
	}
	lay.top, lay.end = top, lay.end+d
}

// drawLines draws the three vertical lines and each side's state bars.
func (lay *layout) drawLines(s *svgw, top float64) {
	s.line(xMid, top, xMid, lay.end, `stroke="#cfd8dc" stroke-width="1.5" stroke-dasharray="5 4"`)
	for _, x := range []float64{xClient, xServer} {
		s.line(x, top, x, lay.end, fmt.Sprintf(`stroke="%s" stroke-width="1.5"`, colLine))
	}
	// State bars: from each state's change to the next; none after CLOSE.
	for _, lane := range []int{laneClient, laneServer} {
		x := xClient
		if lane == laneServer {
			x = xServer
		}
		var sts []*event
		for _, e := range lay.evs {
			if e.lane == lane && e.kind == evState {
				sts = append(sts, e)
			}
		}
		for i, e := range sts {
			if e.state.State == observe.Close {
				continue
			}
			y1 := lay.end
			if i+1 < len(sts) {
				y1 = sts[i+1].y
			}
			s.printf(`<rect class="statebar" x="%s" y="%s" width="8" height="%s" rx="2" fill="%s"/>`+"\n",
				f(x-4), f(e.y), f(max(y1-e.y, 1)), stateColour(e.state.State))
		}
	}
}

// drawWaits draws finproxy's waits: over the cuts, since a segment waits through them.
func (lay *layout) drawWaits(s *svgw) {
	for _, sg := range lay.segs {
		if !sg.held {
			continue
		}
		y0 := sg.y0 + slope/2
		s.printf(`<rect class="wait" x="%s" y="%s" width="8" height="%s" rx="3" fill="%s" fill-opacity="0.28" stroke="%s" stroke-width="1"/>`+"\n",
			f(xMid+sg.off-4), f(y0), f(max(sg.y1-y0, 2)), colHeld, colHeld)
	}
}

// drawCuts draws the gaps cut out of the time axis.
func (lay *layout) drawCuts(s *svgw) {
	for _, c := range lay.cuts {
		s.printf(`<g class="cut">` + "\n")
		s.printf(`<rect x="%s" y="%s" width="%s" height="%s" fill="#ffffff"/>`+"\n", f(xClient-12), f(c.y0), f(xServer-xClient+24), f(c.y1-c.y0))
		for _, x := range []float64{xClient, xMid, xServer} {
			for _, y := range []float64{c.y0, c.y1} {
				s.line(x-9, y+3, x+9, y-3, fmt.Sprintf(`stroke="%s" stroke-width="1.6"`, colGrey))
			}
		}
		mid := (c.y0 + c.y1) / 2
		label := fmtDur(c.gap) + " later"
		for _, x := range []float64{(xClient + xMid) / 2, (xMid + xServer) / 2} {
			s.printf(`<text x="%s" y="%s" text-anchor="middle" %s font-style="italic">⋯ %s ⋯</text>`+"\n", f(x), f(mid+4), sans(12, colGrey), esc(label))
		}
		s.printf("</g>\n")
	}
}

// arrow draws a line with an arrowhead (head) or without.
func (s *svgw) arrow(x1, y1, x2, y2 float64, colour string, dashed, head bool) {
	attrs := fmt.Sprintf(`stroke="%s" stroke-width="1.7"`, colour)
	if dashed {
		attrs += ` stroke-dasharray="6 4"`
	}
	if head {
		attrs += fmt.Sprintf(` marker-end="url(#%s)"`, markerID(colour))
	}
	s.line(x1, y1, x2, y2, attrs)
}

// fateText is what finproxy did to sg in at most n characters.
func fateText(sg *seg, n int) string {
	if utf8.RuneCountInString(sg.fate) > n && sg.fateShort != "" {
		return fit(sg.fateShort, n)
	}
	return fit(sg.fate, n)
}

// clearance is how far from finproxy's line, on the side dir (+1 right, -1 left), text
// with its baseline at y may start: past every wait bar there (waits side by side when
// several segments wait at once), at least 12 px.
func (lay *layout) clearance(y, dir float64) float64 {
	d := 0.0
	for _, h := range lay.segs {
		if !h.held || h.y1 < y-11 || h.y0+slope/2 > y+4 {
			continue
		}
		d = max(d, dir*h.off+4)
	}
	return max(d+8, 12)
}

// chars is how many characters fit in w pixels.
func chars(w float64) int { return max(int(w/charW), 4) }

// drawSeg draws one segment: its arrow, its label above the sender's half, what finproxy
// did above (or, when it ends or starts at finproxy, on) the receiver's half.
func (lay *layout) drawSeg(s *svgw, sg *seg) {
	xs, xr, dir := xClient, xServer, 1.0
	if !sg.toServer {
		xs, xr, dir = xServer, xClient, -1.0
	}
	class := []string{"seg"}
	colour := colInk
	switch {
	case sg.kind == segDropped:
		class = append(class, "dropped")
		colour = colDrop
	case sg.kind == segInjected:
		class = append(class, "injected")
		colour = colInjected
	case sg.kind == segRewritten:
		class = append(class, "rewritten")
	case sg.held:
		colour = colHeld
	case sg.retx:
		colour = colRetx
	}
	if sg.held {
		class = append(class, "held")
	}
	if sg.retx {
		class = append(class, "retransmission")
	}
	s.printf(`<g class="%s">`+"\n", strings.Join(class, " "))
	s.printf("<title>%s</title>\n", esc(lay.tooltip(sg)))

	label := sg.label
	labelCol := colInk
	if sg.retx {
		label = "↻ " + label
		labelCol = colRetx
	}
	if sg.r.Flags.Has(segment.RST) {
		labelCol = colDrop
	}
	anchorS := "start" // text on the sender's half, from the sender
	anchorR := "start" // text on the receiver's half, from finproxy
	if dir < 0 {
		anchorS, anchorR = "end", "end"
	}
	fateAttrs := func(col string) string {
		return fmt.Sprintf(`text-anchor="%s" %s`, anchorR, mono(fontSize, col))
	}
	midY0 := sg.y0 + slope/2 // where the sender's half reaches finproxy
	xw := xMid + sg.off      // where it waits there
	// Text on the receiver's half starts past the wait bars, text on the sender's half
	// ends before them.
	recv := func(y float64) (x float64, n int) {
		c := lay.clearance(y, dir)
		return xMid + dir*c, chars(halfW - c - 12)
	}
	send := func(y float64) int { return chars(halfW - 12 - lay.clearance(y, -dir)) }
	switch sg.kind {
	case segInjected:
		s.arrow(xMid, sg.y0, xr, sg.y0+slope/2, colour, true, true)
		s.printf(`<rect x="%s" y="%s" width="9" height="9" transform="rotate(45 %s %s)" fill="%s"/>`+"\n",
			f(xMid-4.5), f(sg.y0-4.5), f(xMid), f(sg.y0), colInjected)
		x, n := recv(sg.y0 - 5)
		s.printf(`<text x="%s" y="%s" %s>%s</text>`+"\n", f(x), f(sg.y0-5), fateAttrs(labelCol), esc(fit(label, n)))
		c := lay.clearance(sg.y0+4, -dir)
		s.printf(`<text x="%s" y="%s" text-anchor="%s" %s>%s</text>`+"\n", f(xMid-dir*c), f(sg.y0+4), anchorOpp(anchorR),
			mono(fontSize, colInjected), esc(fateText(sg, chars(halfW-c-12))))
		s.printf("</g>\n")
		return
	case segDropped:
		s.arrow(xs, sg.y0, xw, midY0, colour, false, false)
		yx := midY0
		if sg.held {
			yx = sg.y1
		}
		s.line(xw-6, yx-6, xw+6, yx+6, fmt.Sprintf(`stroke="%s" stroke-width="2.6"`, colDrop))
		s.line(xw-6, yx+6, xw+6, yx-6, fmt.Sprintf(`stroke="%s" stroke-width="2.6"`, colDrop))
		x, n := recv(yx + 4)
		x = max(x*dir, (xw+dir*9)*dir) * dir // past its own cross
		s.printf(`<text x="%s" y="%s" %s font-weight="bold">%s</text>`+"\n", f(x), f(yx+4), fateAttrs(colDrop), esc(fateText(sg, n)))
	default:
		second := colour
		dashed := false
		if sg.kind == segRewritten {
			second, dashed = colRewrite, true
		}
		if sg.held {
			s.arrow(xs, sg.y0, xw, midY0, colour, false, false)
			s.arrow(xw, sg.y1, xr, sg.y1+slope/2, second, dashed, true)
		} else if sg.kind == segRewritten {
			s.arrow(xs, sg.y0, xMid, midY0, colour, false, false)
			s.arrow(xMid, midY0, xr, sg.y0+slope, second, dashed, true)
		} else {
			s.arrow(xs, sg.y0, xr, sg.y0+slope, colour, false, true)
		}
		if sg.fate != "" {
			fy := midY0 - 4
			if sg.held {
				fy = sg.y1 - 5
			}
			col := colour
			if sg.kind == segRewritten {
				col = colRewrite
			}
			x, n := recv(fy)
			s.printf(`<text x="%s" y="%s" %s>%s</text>`+"\n", f(x), f(fy), fateAttrs(col), esc(fateText(sg, n)))
		}
		if sg.twoLines() {
			// The segment as it left, under the changed half.
			ly := sg.y0 + slope + 13
			if sg.held {
				ly = sg.y1 + slope/2 + 13
			}
			x, n := recv(ly)
			s.printf(`<text x="%s" y="%s" %s>%s</text>`+"\n", f(x), f(ly), fateAttrs(colRewrite), esc(fit("→ "+sg.outLabel, n)))
		}
	}
	s.printf(`<text x="%s" y="%s" text-anchor="%s" %s>%s</text>`+"\n", f(xs+dir*12), f(sg.y0-5), anchorS, mono(fontSize, labelCol), esc(fit(label, send(sg.y0-5))))
	s.printf("</g>\n")
}

func anchorOpp(a string) string {
	if a == "start" {
		return "end"
	}
	return "start"
}

// tooltip is the full description of a segment, shown on hover.
func (lay *layout) tooltip(sg *seg) string {
	r := sg.r
	from, to := "client", "server"
	if !sg.toServer {
		from, to = to, from
	}
	t := fmt.Sprintf("%s → %s %s seq=%d ack=%d len=%d (absolute)", from, to, r.Flags, r.Seq, r.Ack, r.Len)
	t += fmt.Sprintf("; queued at %s", lay.rel(sg.at))
	if r.VerdictTime != 0 && !r.Injected {
		t += fmt.Sprintf(", verdict at %s (%s)", lay.rel(r.VerdictTime), r.Verdict)
	}
	if r.Rule != "" {
		t += fmt.Sprintf("; rule %s, action %s", r.Rule, r.Action)
	}
	if sg.fate != "" {
		t += "; " + sg.fate
	}
	if sg.retx {
		t += "; a retransmission (this sequence space was sent before)"
	}
	return t
}

// rel writes a time relative to the first event: "+1.234 ms".
func (lay *layout) rel(t int64) string {
	d := time.Duration(t - lay.t0)
	if d < time.Second {
		return fmt.Sprintf("+%.3f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("+%.4f s", float64(d)/1e9)
}

// drawSides writes each side's states, retransmissions, resets and TIME_WAIT restarts
// beside its line.
func (lay *layout) drawSides(s *svgw) {
	for _, e := range lay.evs {
		if e.lane == laneCenter {
			continue
		}
		x, dir, anchor := xClient, -1.0, "end"
		if e.lane == laneServer {
			x, dir, anchor = xServer, 1.0, "start"
		}
		switch e.kind {
		case evState:
			name := e.state.State.String()
			dwell := ""
			switch {
			case e.state.Ongoing:
				dwell = "≥" + fmtDur(time.Duration(e.state.Dwell))
			case e.state.State != observe.Close:
				dwell = fmtDur(time.Duration(e.state.Dwell))
			}
			w := float64(utf8.RuneCountInString(name))*charW + 12
			if dwell != "" {
				w += float64(utf8.RuneCountInString(dwell)+1) * smallW
			}
			x0 := x + dir*12
			left := x0
			if dir < 0 {
				left = x0 - w
			}
			italic := ""
			if e.state.Source == observe.SourceDiag {
				italic = ` font-style="italic"`
			}
			s.printf(`<g class="statechange">` + "\n")
			s.line(x+dir*5, e.y, x0, e.y, fmt.Sprintf(`stroke="%s" stroke-width="1.2"`, colGrey))
			s.printf(`<rect x="%s" y="%s" width="%s" height="17" rx="8.5" fill="%s" stroke="%s" stroke-width="0.8"/>`+"\n",
				f(left), f(e.y-8.5), f(w), stateColour(e.state.State), colLine)
			s.printf(`<text class="state" x="%s" y="%s" %s font-weight="bold"%s>%s`, f(left+6), f(e.y+4.2), mono(fontSize, colInk), italic, esc(name))
			if dwell != "" {
				s.printf(`<tspan class="dwell" font-weight="normal" font-size="%s" fill="#455a64"> %s</tspan>`, f(smallSize), esc(dwell))
			}
			s.printf("</text>\n</g>\n")
		default:
			col := colRetx
			switch e.kind {
			case evResetSent, evResetRecv:
				col = colDrop
			case evTWRestart:
				col = colHeld
			}
			s.printf(`<g class="mark">` + "\n")
			s.printf(`<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", f(x), f(e.y), col)
			s.printf(`<text x="%s" y="%s" text-anchor="%s" %s>%s</text>`+"\n", f(x+dir*12), f(e.y+4), anchor, mono(11, col), esc(fit(e.text, 29)))
			s.printf("</g>\n")
		}
	}
}

// drawRuler writes the time of the events on the left, where there is room.
func (lay *layout) drawRuler(s *svgw) {
	last := -1e9
	x := margin + rulerW - 4
	for _, e := range lay.evs {
		if e.y-last < 14 {
			continue
		}
		last = e.y
		s.text(x, e.y+3.5, `text-anchor="end" `+mono(smallSize, colGrey), lay.rel(e.t))
	}
}

// drawLegend explains the marks; it returns the document's height.
func (lay *layout) drawLegend(s *svgw, y float64) float64 {
	x := margin
	s.printf(`<g class="legend">` + "\n")
	item := func(w float64, draw func(x float64), text string) {
		draw(x)
		s.text(x+w+6, y+4, sans(12, colInk), text)
		x += w + 6 + float64(utf8.RuneCountInString(text))*6.9 + 22
	}
	item(36, func(x float64) { s.arrow(x, y-3, x+36, y+3, colInk, false, true) }, "accepted")
	item(36, func(x float64) {
		s.line(x, y-3, x+26, y+1, fmt.Sprintf(`stroke="%s" stroke-width="1.7"`, colDrop))
		s.line(x+22, y-4, x+32, y+6, fmt.Sprintf(`stroke="%s" stroke-width="2.4"`, colDrop))
		s.line(x+22, y+6, x+32, y-4, fmt.Sprintf(`stroke="%s" stroke-width="2.4"`, colDrop))
	}, "dropped")
	item(56, func(x float64) {
		s.printf(`<rect x="%s" y="%s" width="8" height="16" rx="3" fill="%s" fill-opacity="0.28" stroke="%s"/>`+"\n", f(x+24), f(y-8), colHeld, colHeld)
		s.line(x, y-8, x+28, y-7, fmt.Sprintf(`stroke="%s" stroke-width="1.7"`, colHeld))
		s.arrow(x+28, y+7, x+56, y+8, colHeld, false, true)
	}, "held or delayed in finproxy (bar: the wait)")
	item(36, func(x float64) { s.arrow(x, y, x+36, y+3, colInjected, true, true) }, "injected")
	item(36, func(x float64) { s.arrow(x, y, x+36, y+3, colRewrite, true, true) }, "rewritten")
	s.text(x, y+4, sans(12, colRetx), "↻ retransmission")
	y += 24
	notes := []string{
		"Time runs down. Gaps between events are compressed; gaps over " + fmtDur(breakAfter) + " are cut (two slashes, with their length). The left column is the time since the first event.",
		"Beside each line: the side's TCP states when its kernel entered them, and how long it stayed (italic: seen by sock_diag polling, not a tracepoint).",
		"Arrows are the segments finproxy queued (FIN and RST always, the handshake and other segments as its rules need). seq and ack are relative to each side's SYN.",
	}
	if !lay.fromSYN {
		notes[2] = "Arrows are the segments finproxy queued (FIN and RST always, the handshake and other segments as its rules need). The handshake was not queued: seq and ack are relative to each side's first segment finproxy saw (seq=0), not to its SYN."
	}
	if lay.omitted > 0 {
		notes = append(notes, fmt.Sprintf("%d more segments were not drawn.", lay.omitted))
	}
	maxChars := 170 // (width - 2*margin) / 6.7, 11.5 px proportional text
	for _, n := range notes {
		for _, line := range wrap(n, maxChars) {
			y += 16
			s.text(margin, y, sans(11.5, "#546e7a"), line)
		}
	}
	s.printf("</g>\n")
	for _, n := range lay.l.Notes {
		for _, line := range wrap(n, maxChars) {
			y += 16
			s.text(margin, y, sans(11.5, colFail), line)
		}
	}
	return y + margin
}
