package tomlpos

import (
	"strconv"
	"strings"
)

// Path is a key path in a TOML source, such as rule[2].delay: a list of pieces, each a
// key (quoted as in TOML when it is not a bare key) or an index "[n]". Indexes count from 1,
// in the order the elements appear in the file.
type Path []string

func (p Path) String() string {
	var b strings.Builder
	for i, piece := range p {
		if i > 0 && !strings.HasPrefix(piece, "[") {
			b.WriteByte('.')
		}
		b.WriteString(piece)
	}
	return b.String()
}

// Key returns the path of key k inside p.
func (p Path) Key(k string) Path {
	return append(p[:len(p):len(p)], quoteKey(k))
}

// Index returns the path of element i (1-based) of the array at p.
func (p Path) Index(i int) Path {
	return append(p[:len(p):len(p)], "["+strconv.Itoa(i)+"]")
}

// quoteKey writes k as TOML would need it in a key: bare when it can be, quoted otherwise.
func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		if !IsBareKeyByte(k[i]) {
			return strconv.Quote(k)
		}
	}
	return k
}

// IsBareKeyByte reports whether c may be written in a bare TOML key (A-Z a-z 0-9 _ -).
func IsBareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// LineCol is a 1-based place in a source; columns count bytes, as toml.ParseError does.
// The zero value means "not known".
type LineCol struct{ Line, Col int }

// MaxDepth bounds how deep a source nests: the number of pieces of the longest key path
// (rule[2].delay is 3 deep). A scenario's deepest keys, such as
// expect.client.max_dwell.FIN_WAIT2 or expect.segment[1].side, are 4 deep. The bound
// is checked before the TOML parser runs: its cost per key grows with the square of the
// depth (8,000 nested inline tables, a 32 KB file, cost it 15 s and 7.5 GB).
const MaxDepth = 16

// Locator knows where the keys and values of a TOML source are written. BurntSushi/toml keeps
// that to itself, so Locate scans the source again: table headers, arrays of tables by index,
// dotted keys, inline tables and arrays, best-effort. It records what it can and never
// fails; on a source that parses it finds every key. It also finds where the source nests
// deeper than MaxDepth, and stops there.
//
// What it finds is a tree of key paths, each path a node reached from its parent by one
// piece (a key, quoted as Path quotes it, or an index "[n]"): memory and time are
// linear in the size of the source, whatever its depth.
type Locator struct {
	nodes []locNode // nodes[0] is the root (the empty path)
	edges map[locEdge]int32
	// Deep is where the source first nests deeper than MaxDepth (line 0: nowhere), and
	// DeepPath the path there.
	Deep     LineCol
	DeepPath Path
}

type locNode struct {
	parent int32
	piece  string
	depth  int32
	key    LineCol // where the key (its last piece), the table header or the array element is written
	val    LineCol // where the key's value starts
	arrays int32   // for an array of tables: elements seen so far
}

type locEdge struct {
	parent int32
	piece  string
}

func newLocator() *Locator {
	return &Locator{nodes: []locNode{{parent: -1}}, edges: map[locEdge]int32{}}
}

// find returns the node of path p, or the node of its longest prefix that the locator
// knows and whether that is all of p.
func (l *Locator) find(p Path) (n int32, whole bool) {
	for _, piece := range p {
		c, ok := l.edges[locEdge{n, piece}]
		if !ok {
			return n, false
		}
		n = c
	}
	return n, true
}

// At returns where the key at p is written, or, when the locator does not know it, where the
// nearest enclosing table or key is; 1:1 when nothing encloses it.
func (l *Locator) At(p Path) LineCol {
	best, n := LineCol{1, 1}, int32(0)
	for _, piece := range p {
		c, ok := l.edges[locEdge{n, piece}]
		if !ok {
			break
		}
		n = c
		if lc := l.nodes[n].key; lc.Line > 0 {
			best = lc
		}
	}
	return best
}

// Value returns where the value of the key at p starts, falling back as At does.
func (l *Locator) Value(p Path) LineCol {
	if n, whole := l.find(p); whole && l.nodes[n].val.Line > 0 {
		return l.nodes[n].val
	}
	return l.At(p)
}

// KeyAt reports where the key at p is written, if the locator found it there.
func (l *Locator) KeyAt(p Path) (LineCol, bool) {
	n, whole := l.find(p)
	if !whole || n == 0 || l.nodes[n].key.Line == 0 {
		return LineCol{}, false
	}
	return l.nodes[n].key, true
}

// ValueAt reports where the value of the key at p starts, if the locator found it.
func (l *Locator) ValueAt(p Path) (LineCol, bool) {
	n, whole := l.find(p)
	if !whole || n == 0 || l.nodes[n].val.Line == 0 {
		return LineCol{}, false
	}
	return l.nodes[n].val, true
}

// path returns the path of node n.
func (l *Locator) path(n int32) Path {
	p := make(Path, l.nodes[n].depth)
	for ; n > 0; n = l.nodes[n].parent {
		p[l.nodes[n].depth-1] = l.nodes[n].piece
	}
	return p
}

// scanner is the state of Locate.
type scanner struct {
	src       string
	i         int
	lineStart int // offset of the current line's first byte
	line      int
	loc       *Locator
}

// Locate scans src and returns what it found.
func Locate(src []byte) *Locator {
	s := &scanner{src: string(src), line: 1, loc: newLocator()}
	table := int32(0)
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

// child returns the node of piece inside node n, making it if needed. A node deeper than
// MaxDepth (written at lc) ends the scan: the scanner jumps to the end of the source.
func (s *scanner) child(n int32, piece string, lc LineCol) int32 {
	l := s.loc
	e := locEdge{n, piece}
	if c, ok := l.edges[e]; ok {
		return c
	}
	c := int32(len(l.nodes))
	l.nodes = append(l.nodes, locNode{parent: n, piece: piece, depth: l.nodes[n].depth + 1})
	l.edges[e] = c
	if l.nodes[c].depth > MaxDepth && l.Deep.Line == 0 {
		l.Deep, l.DeepPath = lc, l.path(c)
		s.i = len(s.src)
	}
	return c
}

func (s *scanner) key(n int32, k string, lc LineCol) int32 { return s.child(n, quoteKey(k), lc) }

func (s *scanner) index(n int32, i int32, lc LineCol) int32 {
	return s.child(n, "["+strconv.Itoa(int(i))+"]", lc)
}

// stopped reports whether the scan has ended (at the end of the source, or too deep).
func (s *scanner) stopped() bool { return s.loc.Deep.Line > 0 }

func (s *scanner) eof() bool { return s.i >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *scanner) pos() LineCol { return LineCol{s.line, s.i - s.lineStart + 1} }

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

// setKey records where the key of node n is written (replace: even if known already).
func (s *scanner) setKey(n int32, lc LineCol, replace bool) {
	if nd := &s.loc.nodes[n]; n > 0 && (replace || nd.key.Line == 0) {
		nd.key = lc
	}
}

// setVal records where the value of node n starts, unless known already.
func (s *scanner) setVal(n int32, lc LineCol) {
	if nd := &s.loc.nodes[n]; n > 0 && nd.val.Line == 0 {
		nd.val = lc
	}
}

// header reads [a.b] or [[a.b]] and returns the node of the table it opens.
func (s *scanner) header() (int32, bool) {
	at := s.pos()
	s.i++ // [
	array := s.peek() == '['
	if array {
		s.i++
	}
	s.skipSpace()
	parts, partAt, ok := s.keyParts()
	if !ok || len(parts) == 0 {
		return 0, false
	}
	p := int32(0)
	for n, part := range parts {
		p = s.key(p, part, partAt[n])
		if s.stopped() {
			return 0, false
		}
		last := n == len(parts)-1
		if last && array {
			s.setKey(p, at, false)
			s.loc.nodes[p].arrays++
			p = s.index(p, s.loc.nodes[p].arrays, at)
			s.setKey(p, at, true)
			break
		}
		if k := s.loc.nodes[p].arrays; k > 0 {
			p = s.index(p, k, at) // a sub-table of the last element of an array of tables
		}
		s.setKey(p, at, last)
	}
	return p, !s.stopped()
}

// key reads a possibly dotted key and returns its pieces and where each starts.
func (s *scanner) keyParts() ([]string, []LineCol, bool) {
	var (
		parts []string
		at    []LineCol
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
			for !s.eof() && IsBareKeyByte(s.peek()) {
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
		if s.peek() != '.' || len(parts) > MaxDepth {
			// A key of more pieces nests too deep: the scan ends at its piece MaxDepth+1.
			return parts, at, true
		}
		s.i++
	}
}

// keyValue reads key = value inside the table at node table.
func (s *scanner) keyValue(table int32, inline bool) {
	parts, at, ok := s.keyParts()
	if !ok {
		return
	}
	p := table
	for n, part := range parts {
		p = s.key(p, part, at[n])
		if s.stopped() {
			return
		}
		s.setKey(p, at[n], false)
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.i++
	s.skipSpace()
	s.value(p, inline)
}

// value reads the value of the key at node p.
func (s *scanner) value(p int32, inline bool) {
	if s.stopped() {
		return
	}
	s.setVal(p, s.pos())
	switch c := s.peek(); c {
	case '"':
		s.basicString()
	case '\'':
		s.literalString()
	case '[':
		s.i++
		for n := int32(1); ; n++ {
			s.skipBlank()
			if s.eof() || s.peek() == ']' {
				s.i++
				return
			}
			lc := s.pos()
			e := s.index(p, n, lc)
			if s.stopped() {
				return
			}
			s.setKey(e, lc, false)
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
			if !s.eof() && s.peek() != '\n' {
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
