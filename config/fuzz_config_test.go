package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/internal/tomlpos"
)

// FuzzParse checks that Parse never panics and returns either a config whose rules all
// have an action, or ConfigErrors placed inside the file, sorted.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/bad/*.toml", "testdata/good/*.toml", "../configs/*.toml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("target.port = 1\nrule = [{name = 'a', action = 'test-delay', t_delay = '1s', phase = ['after-client-fin']}]"))
	f.Add([]byte("[target]\naddress = \"::1\"\n[[rule]]\nname = \"h\"\naction = \"test-hold\"\nt_until = \"peer-fin\"\n[rule.x]\n[[rule.y]]\n"))
	// Layouts that the locator must follow.
	f.Add([]byte("a = 1\r\nb = [1,\r\n 2]\r\n[t]\r\nc = 'x' # c\r\n"))
	f.Add([]byte(`"\u0041\e\x41\"" = 1
'lit.key' = 2
[ a . "b c" ]
d = {e = [ {f = 1}, {g = [[1],[2]]} ], h.i = 3}
[[ a . "b c" . h ]]
i = 1
`))
	f.Add([]byte(`x = """a\
  b"""""
y = '''
[[z]]'''''
z = "\"#" # "
w = 1979-05-27 07:32:00Z
v = {
  u = 1, # TOML 1.1
  t = [
  ]
}
`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkLocate(t, data)
		cfg, err := ParseWith(data, "fuzz.toml", testActions())
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a config with its error %v", err)
			}
			var errs ConfigErrors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not ConfigErrors", err, err)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for i, e := range errs {
				if e.Msg == "" || e.Pos.File != "fuzz.toml" || e.Pos.Line < 1 || e.Pos.Col < 1 || e.Pos.Line > lines {
					t.Fatalf("bad error %q at %+v (%d lines)", e.Error(), e.Pos, lines)
				}
				if i > 0 && (e.Pos.Line < errs[i-1].Pos.Line || e.Pos.Line == errs[i-1].Pos.Line && e.Pos.Col < errs[i-1].Pos.Col) {
					t.Fatalf("errors not sorted:\n%v", err)
				}
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if cfg.Target.Port == 0 && len(cfg.Target.Addresses) == 0 {
			t.Fatalf("config without a scope: %+v", cfg.Target)
		}
		names := map[string]bool{}
		for i, r := range cfg.Rules {
			if r == nil || r.Action == nil || r.ActionName == "" || r.Name == "" || names[r.Name] || r.Pos.Line < 1 {
				t.Fatalf("rule %d: %+v", i, r)
			}
			names[r.Name] = true
		}
		_ = cfg.QueueScope()
	})
}

// checkLocate checks that the locator finds every key and array element of a valid TOML
// file, and that a file it lets through (not too deep) is no deeper than MaxDepth: its
// depth check, which runs before the TOML parser, misses nothing the parser would build.
func checkLocate(t *testing.T, data []byte) {
	loc := tomlpos.Locate(data)
	if loc.Deep.Line > 0 {
		return // the parser never sees it
	}
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return
	}
	walkPaths(nil, tree, func(p tomlpos.Path) {
		if _, ok := loc.KeyAt(p); !ok {
			t.Fatalf("locate did not find %s in %q", p, data)
		}
		if len(p) > MaxDepth {
			t.Fatalf("locate let %s (%d deep) through in %q", p, len(p), data)
		}
	})
}

func walkPaths(p tomlpos.Path, v any, visit func(tomlpos.Path)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			q := p.Key(k)
			visit(q)
			walkPaths(q, x, visit)
		}
	case []map[string]any:
		for i, x := range v {
			q := p.Index(i + 1)
			visit(q)
			walkPaths(q, x, visit)
		}
	case []any:
		for i, x := range v {
			q := p.Index(i + 1)
			visit(q)
			walkPaths(q, x, visit)
		}
	}
}
