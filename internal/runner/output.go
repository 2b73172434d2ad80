package runner

import (
	"io"
	"log/slog"
)

// wholeCounter sits between a bufio.Writer and the file of an output (the event log, the
// capture) and counts the units — lines, blocks — that reached the file whole. A write
// error (a full disk) leaves the units still in the buffer, and those after, uncounted:
// the summary's counts are then what the file really holds.
type wholeCounter struct {
	w      io.Writer
	done   int64   // bytes the file took
	handed int64   // bytes handed to the buffer above
	ends   []int64 // ends of the units handed over and not yet in the file whole, in order
	whole  uint64  // units in the file whole
}

func (c *wholeCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.done += int64(n)
	i := 0
	for i < len(c.ends) && c.ends[i] <= c.done {
		i++
	}
	if i > 0 {
		c.whole += uint64(i)
		c.ends = c.ends[:copy(c.ends, c.ends[i:])]
	}
	return n, err
}

// unitWriter is what the encoder above the buffer writes to: each Write is handed to the
// buffer, and ends a unit when unit is set (the encoders write a unit in one Write). The
// unit's end is noted before the buffer may pass it on.
type unitWriter struct {
	buf  io.Writer // the bufio.Writer over c
	c    *wholeCounter
	unit bool
}

func (u *unitWriter) Write(p []byte) (int, error) {
	u.c.handed += int64(len(p))
	if u.unit {
		u.c.ends = append(u.c.ends, u.c.handed)
	}
	return u.buf.Write(p)
}

// outputFailure reports the first write error of an output at once: a fault tool's record
// that silently stops is worse than none.
func outputFailure(log *slog.Logger, what, path string, err error, written uint64) {
	log.Warn(what+": write failed: what follows is not written (the summary counts what was)",
		"file", path, "err", err, "written", written)
}
