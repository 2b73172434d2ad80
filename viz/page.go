package viz

import (
	"fmt"
	"html/template"
	"io"
	"time"
)

// Page is the index of a lab's report directory: the scenario, its runs with their
// outcome, and one diagram inline.
type Page struct {
	Title       string
	Description string
	// Config is the config given to the lab; Server and Client the applications' commands.
	Config, Server, Client string
	Started                time.Time
	Duration               time.Duration
	Passed, Failed         int
	Runs                   []PageRun
	// Featured is the run whose diagram FeaturedSVG (a document WriteSVG wrote) is shown
	// inline.
	Featured    int
	FeaturedSVG string
	// Report is the link to the machine-readable report.
	Report string
}

// PageRun is one run in the index.
type PageRun struct {
	Run      int
	Pass     bool
	Duration time.Duration
	Failures []string
	// Client and Server are the states each side went through ("SYN_SENT → ...").
	Client, Server string
	// Diagrams are the run's ladder diagrams, Files its other files (capture, event log).
	Diagrams []Link
	Files    []Link
}

// Link is a relative link with its text.
type Link struct {
	Href, Text string
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string { return fmtDur(d.Round(time.Millisecond)) },
	"svg": func(s string) template.HTML {
		// The document comes from WriteSVG: markup finproxy made, every text escaped.
		return template.HTML(s)
	},
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, one)
		}
		return fmt.Sprintf("%d %s", n, many)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #263238; margin: 24px; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
.desc { margin: 0 0 10px 0; }
.meta { color: #546e7a; font-size: 13px; margin: 2px 0; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.summary { font-size: 16px; margin: 12px 0; }
span.pass { color: #2e7d32; font-weight: bold; }
span.fail { color: #c62828; font-weight: bold; }
table { border-collapse: collapse; margin: 8px 0 20px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #cfd8dc; padding: 4px 10px; text-align: left; vertical-align: top; }
td.nowrap { white-space: nowrap; }
th { background: #eceff1; }
td.states { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11px; color: #455a64; }
ul.failures { margin: 0; padding-left: 16px; color: #c62828; font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
.diagram { border: 1px solid #cfd8dc; display: inline-block; }
h2 { font-size: 17px; margin: 18px 0 8px 0; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{with .Description}}<p class="desc">{{.}}</p>{{end}}
{{with .Config}}<p class="meta">config <code>{{.}}</code></p>{{end}}
{{with .Server}}<p class="meta">server <code>{{.}}</code></p>{{end}}
{{with .Client}}<p class="meta">client <code>{{.}}</code></p>{{end}}
{{with time .Started}}<p class="meta">started {{.}}{{end}}{{if .Duration}}, took {{ms .Duration}}{{end}}</p>
<p class="summary">{{if eq .Failed 0}}<span class="pass">{{plural .Passed "run" "runs"}} passed</span>{{else}}<span class="fail">{{.Failed}} of {{len .Runs}} runs failed</span>, {{.Passed}} passed{{end}}{{with .Report}} · <a href="{{.}}">report.json</a>{{end}}</p>
<table>
<tr><th>run</th><th>result</th><th>time</th><th>client</th><th>server</th><th>failures</th><th>files</th></tr>
{{range .Runs}}<tr id="run-{{.Run}}">
<td>{{.Run}}</td>
<td>{{if .Pass}}<span class="pass">pass</span>{{else}}<span class="fail">FAIL</span>{{end}}</td>
<td class="nowrap">{{ms .Duration}}</td>
<td class="states">{{.Client}}</td>
<td class="states">{{.Server}}</td>
<td>{{with .Failures}}<ul class="failures">{{range .}}<li>{{.}}</li>{{end}}</ul>{{end}}</td>
<td class="nowrap">{{range $i, $l := .Diagrams}}{{if $i}} · {{end}}<a href="{{$l.Href}}">{{$l.Text}}</a>{{end}}{{range .Files}} · <a href="{{.Href}}">{{.Text}}</a>{{end}}</td>
</tr>
{{end}}</table>
{{if .FeaturedSVG}}<h2>run {{.Featured}}</h2>
<div class="diagram">
{{svg .FeaturedSVG}}</div>
{{end}}</body>
</html>
`))

// WriteHTML writes the index page: a self-contained HTML document (inline style, the
// featured diagram inline, links relative to the page).
func WriteHTML(w io.Writer, p Page) error {
	return pageTmpl.Execute(w, p)
}
