package configs_test

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/finproxy/finproxy/configs"
)

// catalogue is the page that describes every scenario, relative to the module root.
const catalogue = "docs/scenarios.md"

// moduleRoot returns the directory of go.mod above the test's working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// repoFiles lists the repository's files relative to root: what git tracks plus what it
// would track (untracked files that are not ignored), or, without git or outside a git
// work tree (a source archive), every file below root except .git.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	if _, err := exec.LookPath("git"); err == nil {
		cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			var files []string
			for _, f := range strings.Split(string(out), "\x00") {
				if f != "" {
					files = append(files, filepath.FromSlash(f))
				}
			}
			return files
		}
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The scenario catalogue used to live in a directory beside the repository, which its
// users do not have; the repository must point to its own copy, docs/scenarios.md.
func TestNoReferenceOutsideRepository(t *testing.T) {
	root := moduleRoot(t)
	// Built from parts so that this file does not match itself.
	outside := "shared"
	ref := regexp.MustCompile(`(^|[^\w.-])` + outside + `/`)
	files := repoFiles(t, root)
	if len(files) < 10 {
		t.Fatalf("found %d files below %s: the search checks nothing", len(files), root)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // tracked but deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		head := data[:min(len(data), 8000)]
		if bytes.IndexByte(head, 0) >= 0 {
			continue // binary
		}
		for i, line := range strings.Split(string(data), "\n") {
			if ref.MatchString(line) {
				t.Errorf("%s:%d refers to %s/, which is not in the repository (link %s instead): %s",
					filepath.ToSlash(f), i+1, outside, catalogue, strings.TrimSpace(line))
			}
		}
	}
}

var (
	// | 4 | [lost final ACK](#4-lost-final-ack) | [`lost-final-ack`](../configs/lost-final-ack.toml) | ... |
	tableRow = regexp.MustCompile("^\\|\\s*(\\d+)\\s*\\|[^|]*\\|\\s*\\[`([^`]+)`\\]\\(\\.\\./configs/([^)]+)\\.toml\\)\\s*\\|")
	// ## 4. Lost final ACK
	section = regexp.MustCompile(`^## (\d+)\. `)
	// **Preset:** [`lost-final-ack`](../configs/lost-final-ack.toml)
	presetLine = regexp.MustCompile("^\\*\\*Preset:\\*\\* \\[`([^`]+)`\\]\\(\\.\\./configs/([^)]+)\\.toml\\)")
	// # Scenario 4 of docs/scenarios.md: lost final ACK.
	firstLine = regexp.MustCompile(`^# Scenario (\d+) of ` + regexp.QuoteMeta(catalogue) + `\b`)
	link      = regexp.MustCompile(`\]\(([^)\s]+)\)`)
)

// Every preset has a row in the catalogue's table and a section under its scenario's
// number, and its first line names that number and the catalogue: a new preset without a
// catalogue entry fails, and so does an entry for a preset that is gone.
func TestCatalogueNamesEveryPreset(t *testing.T) {
	root := moduleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, catalogue))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}     // preset -> scenario number, from the table
	sections := map[string]int{} // preset -> number of the section naming it
	current := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := tableRow.FindStringSubmatch(line); m != nil {
			num, _ := strconv.Atoi(m[1])
			if m[2] != m[3] {
				t.Errorf("%s:%d: the row names %q but links configs/%s.toml", catalogue, n, m[2], m[3])
			}
			if prev, ok := rows[m[2]]; ok {
				t.Errorf("%s:%d: preset %s has a second row (scenario %d, first %d)", catalogue, n, m[2], num, prev)
			}
			rows[m[2]] = num
		}
		if m := section.FindStringSubmatch(line); m != nil {
			current, _ = strconv.Atoi(m[1])
		}
		if m := presetLine.FindStringSubmatch(line); m != nil {
			if m[1] != m[2] {
				t.Errorf("%s:%d: the section names %q but links configs/%s.toml", catalogue, n, m[1], m[2])
			}
			if current == 0 {
				t.Errorf("%s:%d: preset %s named before any scenario section", catalogue, n, m[1])
			}
			sections[m[1]] = current
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	names := configs.Names()
	if len(names) == 0 {
		t.Fatal("no presets embedded: the test checks nothing")
	}
	have := map[string]bool{}
	for _, name := range names {
		have[name] = true
		num, ok := rows[name]
		if !ok {
			t.Errorf("configs/%s.toml has no row in the table of %s: add the scenario it realises", name, catalogue)
			continue
		}
		if sec, ok := sections[name]; !ok {
			t.Errorf("configs/%s.toml has no \"**Preset:**\" line in a section of %s", name, catalogue)
		} else if sec != num {
			t.Errorf("configs/%s.toml: the table of %s says scenario %d, its section is scenario %d", name, catalogue, num, sec)
		}
		toml, path, _ := configs.Read(name)
		first, _, _ := strings.Cut(string(toml), "\n")
		m := firstLine.FindStringSubmatch(first)
		if m == nil {
			t.Errorf("%s:1: want \"# Scenario N of %s: ...\"; have %q", path, catalogue, first)
		} else if m[1] != strconv.Itoa(num) {
			t.Errorf("%s:1: names scenario %s; the table of %s has it under %d", path, m[1], catalogue, num)
		}
	}
	for name, num := range rows {
		if !have[name] {
			t.Errorf("%s: scenario %d's row names preset %s, which configs/ does not have", catalogue, num, name)
		}
	}
	for name := range sections {
		if !have[name] {
			t.Errorf("%s: a section names preset %s, which configs/ does not have", catalogue, name)
		}
	}
}

// slug is the anchor GitHub gives a heading: lower case, punctuation other than '-' and
// '_' removed, spaces turned into '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// The catalogue's links lead somewhere: relative paths exist, #anchors are headings.
func TestCatalogueLinks(t *testing.T) {
	root := moduleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, catalogue))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	lines := strings.Split(string(data), "\n")
	for _, line := range lines {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[slug(strings.TrimSpace(strings.TrimLeft(h, "#")))] = true
		}
	}
	checked := 0
	for i, line := range lines {
		for _, m := range link.FindAllStringSubmatch(line, -1) {
			target := m[1]
			switch {
			case strings.Contains(target, "://"):
				continue
			case strings.HasPrefix(target, "#"):
				if !anchors[target[1:]] {
					t.Errorf("%s:%d: link %s: no heading has that anchor", catalogue, i+1, target)
				}
			default:
				path, _, _ := strings.Cut(target, "#")
				if _, err := os.Stat(filepath.Join(root, filepath.Dir(catalogue), filepath.FromSlash(path))); err != nil {
					t.Errorf("%s:%d: link %s: %v", catalogue, i+1, target, err)
				}
			}
			checked++
		}
	}
	if checked == 0 {
		t.Errorf("%s: no link found: the check checks nothing", catalogue)
	}
}
