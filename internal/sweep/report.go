package sweep

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/finproxy/finproxy/internal/junit"
	"github.com/finproxy/finproxy/internal/scenario"
	"github.com/finproxy/finproxy/viz"
)

// WriteTable prints the fault × finding table: one line per fault, its findings with
// the number of runs that showed each.
func WriteTable(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tRUNS\tFINDINGS")
	for _, f := range rep.Faults {
		var parts []string
		for _, c := range f.Summary {
			p := fmt.Sprintf("%s: %s %d/%d", c.Kind, c.Key, c.Runs, len(f.Runs))
			if c.Process != nil && c.Kind == KindLeak {
				p += fmt.Sprintf(" [%s pid %d]", c.Process.Comm, c.Process.Pid)
			}
			parts = append(parts, p)
		}
		harness := 0
		for _, r := range f.Runs {
			if r.Harness != "" {
				harness++
			}
		}
		if harness > 0 {
			parts = append(parts, fmt.Sprintf("harness error %d/%d", harness, len(f.Runs)))
		}
		if len(parts) == 0 {
			parts = []string{"nothing unusual"}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", f.Name, len(f.Runs), parts[0])
		for _, p := range parts[1:] {
			fmt.Fprintf(tw, "\t\t%s\n", p)
		}
	}
	tw.Flush()
	for _, k := range Kinds {
		var names []string
		for _, f := range rep.Faults {
			if f.Has(k) {
				names = append(names, f.Name)
			}
		}
		if len(names) > 0 {
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(names, ", "))
		}
	}
	if rep.Interrupted {
		fmt.Fprintf(w, "interrupted: %d faults done\n", len(rep.Faults))
	}
}

// WriteReport writes dir/report.json, the ladder of each run that showed a finding (and
// of each fault's first run), and dir/index.html.
func WriteReport(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644))
	page := pageData{Report: rep}
	for _, f := range rep.Faults {
		pf := pageFault{FaultResult: f}
		drawn := map[int]string{}
		draw := func(run int) string {
			if href, ok := drawn[run]; ok {
				return href
			}
			href := ""
			if r := labRun(f.Lab, run); r != nil {
				var buf bytes.Buffer
				if err := viz.WriteSVG(&buf, scenario.Ladder(f.Lab, r, nil)); err != nil {
					errs = append(errs, err)
				} else {
					href = filepath.Join(f.Name, fmt.Sprintf("run-%d", run), scenario.LadderName)
					errs = append(errs, os.WriteFile(filepath.Join(dir, href), buf.Bytes(), 0o644))
				}
			}
			drawn[run] = href
			return href
		}
		for _, c := range f.Summary {
			pf.Findings = append(pf.Findings, pageFinding{Count: c, Ladder: draw(c.Example)})
		}
		if len(f.Runs) > 0 {
			pf.FirstLadder = draw(f.Runs[0].Run)
		}
		page.Faults = append(page.Faults, pf)
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, page); err != nil {
		return err
	}
	errs = append(errs, os.WriteFile(filepath.Join(dir, "index.html"), buf.Bytes(), 0o644))
	return errors.Join(errs...)
}

func labRun(rep *scenario.LabReport, run int) *scenario.RunReport {
	if rep == nil {
		return nil
	}
	for _, r := range rep.Runs {
		if r.Run == run {
			return r
		}
	}
	return nil
}

type pageData struct {
	*Report
	Faults []pageFault
}

type pageFault struct {
	*FaultResult
	Findings    []pageFinding
	FirstLadder string
}

type pageFinding struct {
	Count
	Ladder string
}

var pageTmpl = template.Must(template.New("sweep").Funcs(template.FuncMap{
	"join": func(s []string) string { return strings.Join(s, " ") },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>finproxy sweep</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
.leak, .hang { color: #b00; font-weight: bold; }
.linger, .error { color: #a60; }
.none { color: #080; }
code { background: #f4f4f4; padding: 1px 3px; }
</style></head><body>
<h1>finproxy sweep</h1>
<p>server <code>{{join .Server}}</code><br>client <code>{{join .Client}}</code><br>
{{.Runs}} runs per fault · started {{.Started.Format "2006-01-02 15:04:05 MST"}}{{if .Interrupted}} · <b>interrupted</b>{{end}} · <a href="report.json">report.json</a></p>
<table>
<tr><th>fault</th><th>what it does</th><th>findings: the runs that showed each, and the ladder diagram of one</th></tr>
{{range $f := .Faults}}<tr id="{{$f.Name}}">
<td><a href="{{$f.Config}}">{{$f.Name}}</a></td><td>{{$f.Description}}</td>
<td>{{range $f.Findings}}<div><span class="{{.Kind}}">{{.Kind}}</span>: {{.Key}}, {{.Runs}} of {{len $f.Runs}} runs{{with .Process}} ({{.Comm}}, pid {{.Pid}}){{end}}{{with .Ladder}} · <a href="{{.}}">ladder</a>{{end}}</div>{{else}}<span class="none">nothing unusual</span>{{with $f.FirstLadder}} · <a href="{{.}}">ladder</a>{{end}}{{end}}</td>
</tr>
{{end}}</table>
</body></html>
`))

// WriteJUnit writes one test case per fault, failed when it showed a finding of one of
// failOn.
func WriteJUnit(path string, rep *Report, failOn []string) error {
	s := junit.Suite{Name: "finproxy sweep", Time: rep.Ended.Sub(rep.Started).Seconds()}
	for _, f := range rep.Faults {
		c := junit.Case{Name: f.Name, Classname: "finproxy.sweep"}
		var lines, failing []string
		for _, r := range f.Runs {
			c.Time += r.DurationMS / 1000
			for _, fd := range r.Findings {
				lines = append(lines, fmt.Sprintf("run %d: %s: %s", r.Run, fd.Kind, fd.Text))
			}
		}
		for _, cnt := range f.Summary {
			if slices.Contains(failOn, cnt.Kind) {
				failing = append(failing, fmt.Sprintf("%s: %s (%d of %d runs)", cnt.Kind, cnt.Key, cnt.Runs, len(f.Runs)))
			}
		}
		if len(failing) > 0 {
			c.Failure = &junit.Failure{Message: failing[0], Text: strings.Join(failing, "\n")}
		}
		c.SystemOut = strings.Join(lines, "\n")
		s.Cases = append(s.Cases, c)
	}
	return junit.Write(path, s)
}
