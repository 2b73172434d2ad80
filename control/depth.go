package control

import (
	"fmt"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/rules"
)

// MaxNesting bounds how deeply arrays and inline tables nest in a TOML rule set: a rule
// set needs 3 or 4 levels, and deeply nested input costs the config loader memory far
// beyond its size (issue 15: 32 KB of nesting took 2.4 GB), so the API refuses it before
// parsing.
const MaxNesting = 32

// checkNesting returns an error naming the line and column where body nests arrays or
// inline tables deeper than MaxNesting. It reads TOML's strings and comments as such:
// brackets in them do not count.
func checkNesting(body []byte, file string) error {
	depth, line, col := 0, 1, 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		col++
		switch c {
		case '\n':
			line, col = line+1, 0
		case '#':
			for i+1 < len(body) && body[i+1] != '\n' {
				i++
			}
		case '"', '\'':
			// A basic or literal string, single-line or multi-line.
			i, line, col = skipString(body, i, line, col)
		case '[', '{':
			if depth++; depth > MaxNesting {
				return config.ConfigErrors{{Pos: rules.Position{File: file, Line: line, Col: col},
					Msg: fmt.Sprintf("arrays and inline tables nest deeper than %d levels; a rule set needs a few", MaxNesting)}}
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}

// skipString skips the string that opens at body[i] (a quote); it returns the index of
// its last byte and the position there.
func skipString(body []byte, i, line, col int) (int, int, int) {
	quote := body[i]
	multi := i+2 < len(body) && body[i+1] == quote && body[i+2] == quote
	if multi {
		i += 2
		col += 2
	}
	for i++; i < len(body); i++ {
		col++
		switch {
		case body[i] == '\n':
			line, col = line+1, 0
		case body[i] == '\\' && quote == '"':
			i++
			col++
		case body[i] == quote && !multi:
			return i, line, col
		case body[i] == quote && i+2 < len(body) && body[i+1] == quote && body[i+2] == quote:
			return i + 2, line, col + 2
		}
	}
	return i, line, col
}
