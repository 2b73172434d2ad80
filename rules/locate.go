package rules

import (
	"strconv"
	"strings"
)

// keyPath is a key path in a config file, such as rule[2].delay: a list of pieces, each a
// key (quoted as in TOML when it is not a bare key) or an index "[n]". Indexes count from 1,
// in the order the elements appear in the file.
type keyPath []string

func (p keyPath) String() string {
	var b strings.Builder
	for i, piece := range p {
		if i > 0 && !strings.HasPrefix(piece, "[") {
			b.WriteByte('.')
		}
		b.WriteString(piece)
	}
	return b.String()
}

// key returns the path of key k inside p.
func (p keyPath) key(k string) keyPath {
	return append(p[:len(p):len(p)], quoteKey(k))
}

// index returns the path of element i (1-based) of the array at p.
func (p keyPath) index(i int) keyPath {
	return append(p[:len(p):len(p)], "["+strconv.Itoa(i)+"]")
}

// quoteKey writes k as TOML would need it in a key: bare when it can be, quoted otherwise.
func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		if !isBareKeyByte(k[i]) {
			return strconv.Quote(k)
		}
	}
	return k
}

func isBareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// lineCol is a 1-based place in a source; columns count bytes, as toml.ParseError does.
type lineCol struct{ line, col int }

// locator knows where the keys and values of a TOML source are written. BurntSushi/toml keeps
// that to itself, so locate scans the source again: table headers, arrays of tables by index,
// dotted keys, inline tables and arrays, best-effort. It is meant for sources that already
// parsed without error; on anything else it records what it can and never fails.
type locator struct {
	keys map[string]lineCol // where a key (its last piece), a table header or an array element is written
	vals map[string]lineCol // where a key's value starts
}

// at returns where the key at p is written, or, when the locator does not know it, where the
// nearest enclosing table or key is; 1:1 when nothing encloses it.
func (l *locator) at(p keyPath) lineCol {
	for q := p; len(q) > 0; q = q[:len(q)-1] {
		if lc, ok := l.keys[q.String()]; ok {
			return lc
		}
	}
	return lineCol{1, 1}
}

// value returns where the value of the key at p starts, falling back as at does.
func (l *locator) value(p keyPath) lineCol {
	if lc, ok := l.vals[p.String()]; ok {
		return lc
	}
	return l.at(p)
}

// scanner is the state of locate.
type scanner struct {
	src       string
	i         int
	lineStart int // offset of the current line's first byte
	line      int
	loc       *locator
	arrays    map[string]int // arrays of tables: elements seen so far, by resolved path
}

// locate scans src and returns what it found.
func locate(src []byte) *locator {
	s := &scanner{
		src:    string(src),
		line:   1,
		loc:    &locator{keys: map[string]lineCol{}, vals: map[string]lineCol{}},
		arrays: map[string]int{},
	}
	var table keyPath
	for s.i < len(s.src) {
		start := s.i
		s.skipSpace()
		switch c := s.peek(); {
		case c == '#':
			s.skipComment()
		case c == '\n' || c == '\r':
			s.newline()
		case c == '[':
			if t, ok := s.header(); ok {
				table = t
			}
			s.skipLine()
		default:
			s.keyValue(table, false)
			s.skipLine()
		}
		if s.i == start {
			s.advance() // never loop on something unexpected
		}
	}
	return s.loc
}

func (s *scanner) eof() bool { return s.i >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *scanner) pos() lineCol { return lineCol{s.line, s.i - s.lineStart + 1} }

// advance moves one byte on, counting lines.
func (s *scanner) advance() {
	if s.eof() {
		return
	}
	if s.src[s.i] == '\n' {
		s.line++
		s.lineStart = s.i + 1
	}
	s.i++
}

func (s *scanner) newline() {
	if s.peek() == '\r' {
		s.i++
	}
	if s.peek() == '\n' {
		s.advance()
	}
}

// skipSpace skips blanks within a line.
func (s *scanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t'; c = s.peek() {
		s.i++
	}
}

// skipBlank skips blanks, newlines and comments (inside arrays and inline tables).
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.advance()
		case '#':
			s.skipComment()
		default:
			return
		}
	}
}

func (s *scanner) skipComment() {
	for !s.eof() && s.peek() != '\n' {
		s.i++
	}
}

// skipLine skips to the start of the next line, but not into a value: whatever remains of
// the current line after a header or key/value is a comment or blanks.
func (s *scanner) skipLine() {
	for !s.eof() && s.peek() != '\n' {
		s.i++
	}
	s.advance()
}

func (s *scanner) record(m map[string]lineCol, p keyPath, lc lineCol, replace bool) {
	if len(p) == 0 {
		return
	}
	k := p.String()
	if _, ok := m[k]; ok && !replace {
		return
	}
	m[k] = lc
}

// header reads [a.b] or [[a.b]] and returns the path of the table it opens.
func (s *scanner) header() (keyPath, bool) {
	at := s.pos()
	s.i++ // [
	array := s.peek() == '['
	if array {
		s.i++
	}
	s.skipSpace()
	parts, _, ok := s.key()
	if !ok || len(parts) == 0 {
		return nil, false
	}
	var p keyPath
	for n, part := range parts {
		p = p.key(part)
		last := n == len(parts)-1
		if last && array {
			s.record(s.loc.keys, p, at, false)
			s.arrays[p.String()]++
			p = p.index(s.arrays[p.String()])
			s.record(s.loc.keys, p, at, true)
			break
		}
		if k, ok := s.arrays[p.String()]; ok {
			p = p.index(k) // a sub-table of the last element of an array of tables
		}
		s.record(s.loc.keys, p, at, last)
	}
	return p, true
}

// key reads a possibly dotted key and returns its pieces and where each starts.
func (s *scanner) key() ([]string, []lineCol, bool) {
	var (
		parts []string
		at    []lineCol
	)
	for {
		s.skipSpace()
		lc := s.pos()
		var part string
		switch s.peek() {
		case '"':
			part = unescapeBasic(s.basicString())
		case '\'':
			raw := s.literalString()
			if len(raw) >= 2 {
				part = raw[1 : len(raw)-1]
			}
		default:
			start := s.i
			for !s.eof() && isBareKeyByte(s.peek()) {
				s.i++
			}
			if s.i == start {
				return parts, at, false
			}
			part = s.src[start:s.i]
		}
		parts = append(parts, part)
		at = append(at, lc)
		s.skipSpace()
		if s.peek() != '.' {
			return parts, at, true
		}
		s.i++
	}
}

// keyValue reads key = value inside the table at table.
func (s *scanner) keyValue(table keyPath, inline bool) {
	parts, at, ok := s.key()
	if !ok {
		return
	}
	p := table
	for n, part := range parts {
		p = p.key(part)
		s.record(s.loc.keys, p, at[n], false)
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.i++
	s.skipSpace()
	s.value(p, inline)
}

// value reads the value of the key at p.
func (s *scanner) value(p keyPath, inline bool) {
	s.record(s.loc.vals, p, s.pos(), false)
	switch c := s.peek(); c {
	case '"':
		s.basicString()
	case '\'':
		s.literalString()
	case '[':
		s.i++
		for n := 1; ; n++ {
			s.skipBlank()
			if s.eof() || s.peek() == ']' {
				s.i++
				return
			}
			e := p.index(n)
			s.record(s.loc.keys, e, s.pos(), false)
			start := s.i
			s.value(e, true)
			s.skipBlank()
			if s.peek() == ',' {
				s.i++
			} else if s.i == start {
				s.advance()
			}
		}
	case '{':
		s.i++
		for {
			s.skipBlank()
			if s.eof() || s.peek() == '}' {
				s.i++
				return
			}
			start := s.i
			s.keyValue(p, true)
			s.skipBlank()
			if s.peek() == ',' {
				s.i++
			} else if s.i == start {
				s.advance()
			}
		}
	default:
		// A number, boolean or date-time: up to a separator.
		for !s.eof() {
			switch s.peek() {
			case '\n', '#', ',':
				return
			case ']', '}':
				if inline {
					return
				}
			}
			s.i++
		}
	}
}

// basicString reads a "..." or """...""" string and returns its source text.
func (s *scanner) basicString() string {
	start := s.i
	if strings.HasPrefix(s.src[s.i:], `"""`) {
		s.i += 3
		for !s.eof() {
			switch {
			case s.peek() == '\\':
				s.advance()
				s.advance()
			case strings.HasPrefix(s.src[s.i:], `"""`):
				s.i += 3
				for s.peek() == '"' { // up to two quotes may close the content
					s.i++
				}
				return s.src[start:s.i]
			default:
				s.advance()
			}
		}
		return s.src[start:s.i]
	}
	s.i++
	for !s.eof() {
		switch s.peek() {
		case '\\':
			s.i++
			if s.peek() != '\n' {
				s.i++
			}
		case '"':
			s.i++
			return s.src[start:s.i]
		case '\n':
			return s.src[start:s.i]
		default:
			s.i++
		}
	}
	return s.src[start:s.i]
}

// literalString reads a literal string, on one line or multi-line, and returns its source text.
func (s *scanner) literalString() string {
	start := s.i
	if strings.HasPrefix(s.src[s.i:], `'''`) {
		s.i += 3
		for !s.eof() {
			if strings.HasPrefix(s.src[s.i:], `'''`) {
				s.i += 3
				for s.peek() == '\'' {
					s.i++
				}
				return s.src[start:s.i]
			}
			s.advance()
		}
		return s.src[start:s.i]
	}
	s.i++
	for !s.eof() {
		switch s.peek() {
		case '\'':
			s.i++
			return s.src[start:s.i]
		case '\n':
			return s.src[start:s.i]
		}
		s.i++
	}
	return s.src[start:s.i]
}

// unescapeBasic returns the value of a one-line basic string given with its quotes.
func unescapeBasic(raw string) string {
	raw = strings.TrimPrefix(raw, `"`)
	raw = strings.TrimSuffix(raw, `"`)
	if !strings.Contains(raw, `\`) {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			b.WriteByte(c)
			continue
		}
		i++
		hex := 0
		switch raw[i] {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'x':
			hex = 2
		case 'u':
			hex = 4
		case 'U':
			hex = 8
		default: // \" and \\; others do not parse
			b.WriteByte(raw[i])
		}
		if hex > 0 && i+hex < len(raw) {
			if r, err := strconv.ParseUint(raw[i+1:i+1+hex], 16, 32); err == nil {
				b.WriteRune(rune(r))
				i += hex
			}
		}
	}
	return b.String()
}
