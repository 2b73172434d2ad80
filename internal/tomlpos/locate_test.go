package tomlpos

import (
	"strings"
	"testing"
)

func TestLocate(t *testing.T) {
	src := `# comment [not] a = "table"
top = 1 # [[fake]]
"quoted key" = 'lit'
ml = """
x = 1
[fake]
"""
lit = '''
[[rule]]
'''
a.b . c = { d = 1, e = [1, { f = 2 }] , "g.h" = 3 }
arr = [
  "x", # comment ]
  [ 1, 2 ],
]

[t1]
k = 1
[t1.sub]
k2 = 2

[[rule]]
name = "one"
[rule.extra]
x = 1

  [[ rule ]]
	name = "two"
[[rule.nested]]
y = 1
[[rule.nested]]
y = 2
[rule.nested.deep]
z = 3
[[other]]
w = 4
x = 1979-05-27 07:32:00Z
`
	l := Locate([]byte(src))
	for path, want := range map[string]LineCol{
		"top":                      {2, 1},
		`"quoted key"`:             {3, 1},
		"ml":                       {4, 1},
		"lit":                      {8, 1},
		"a":                        {11, 1},
		"a.b":                      {11, 3},
		"a.b.c":                    {11, 7},
		"a.b.c.d":                  {11, 13},
		"a.b.c.e":                  {11, 20},
		"a.b.c.e[2]":               {11, 28},
		"a.b.c.e[2].f":             {11, 30},
		`a.b.c."g.h"`:              {11, 41},
		"arr":                      {12, 1},
		"arr[2]":                   {14, 3},
		"arr[2][2]":                {14, 8},
		"t1":                       {17, 1},
		"t1.k":                     {18, 1},
		"t1.sub":                   {19, 1},
		"t1.sub.k2":                {20, 1},
		"rule":                     {22, 1},
		"rule[1]":                  {22, 1},
		"rule[1].name":             {23, 1},
		"rule[1].extra":            {24, 1},
		"rule[1].extra.x":          {25, 1},
		"rule[2]":                  {27, 3},
		"rule[2].name":             {28, 2},
		"rule[2].nested[1]":        {29, 1},
		"rule[2].nested[1].y":      {30, 1},
		"rule[2].nested[2].y":      {32, 1},
		"rule[2].nested[2].deep.z": {34, 1},
		"other[1].w":               {36, 1},
		"other[1].x":               {37, 1},
	} {
		if got, _ := l.KeyAt(pathOf(path)); got != want {
			t.Errorf("key %s at %v, want %v", path, got, want)
		}
	}
	for path, want := range map[string]LineCol{
		"top":        {2, 7},
		"a.b.c":      {11, 11},
		"a.b.c.e[1]": {11, 25},
		"arr[1]":     {13, 3},
		"other[1].x": {37, 5},
	} {
		if got, _ := l.ValueAt(pathOf(path)); got != want {
			t.Errorf("value %s at %v, want %v", path, got, want)
		}
	}
	for _, bogus := range []string{"fake", "fake[1]", "x", "rule[3]"} {
		if lc, ok := l.KeyAt(pathOf(bogus)); ok {
			t.Errorf("found %s at %v", bogus, lc)
		}
	}
	if got := l.At(Path{"rule", "[2]", "missing"}); got != (LineCol{27, 3}) {
		t.Errorf("fallback to the table: %v", got)
	}
	if got := l.At(Path{"nothing"}); got != (LineCol{1, 1}) {
		t.Errorf("fallback to 1:1: %v", got)
	}
}

// pathOf reads a key path as Path.String writes it: rule[2].nested[1].y, a."g.h".
func pathOf(s string) Path {
	var p Path
	for i := 0; i < len(s); {
		switch s[i] {
		case '.':
			i++
		case '[':
			j := i + strings.IndexByte(s[i:], ']') + 1
			p, i = append(p, s[i:j]), j
		case '"':
			j := i + 1 + strings.IndexByte(s[i+1:], '"') + 1
			p, i = append(p, s[i:j]), j
		default:
			j := i
			for j < len(s) && IsBareKeyByte(s[j]) {
				j++
			}
			p, i = append(p, s[i:j]), j
		}
	}
	return p
}
