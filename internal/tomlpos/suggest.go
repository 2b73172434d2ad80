package tomlpos

import (
	"math"
	"strings"
)

// Suggest returns the known name closest to k when it is close enough to be a typo (the
// "did you mean" of config errors), or "".
func Suggest(k string, known []string) string {
	best, bestD := "", math.MaxInt
	for _, n := range known {
		if d := EditDistance(strings.ToLower(k), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	limit := 1
	if len(best) > 5 {
		limit = 2
	}
	if best == "" || bestD > limit {
		return ""
	}
	return best
}

// EditDistance is the optimal string alignment distance: insertions, deletions,
// substitutions and transpositions of adjacent bytes.
func EditDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
