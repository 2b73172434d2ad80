package apps

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Record is the JSON line printed for each connection, by the client and by the server:
//
//	{"conn":0,"local":"198.18.1.2:40000","remote":"198.18.2.2:8080","sent":10,"received":17,"error":"","elapsed_ms":1.25}
//
// Conn counts connections from 0 in the order they were made (client) or accepted
// (server). Sent and Received count payload bytes. Error is "" when the connection did
// what its mode expects; otherwise it names the failure, errno-style where there is an
// errno ("ECONNRESET", "EPIPE", "ECONNREFUSED", "ETIMEDOUT", "EADDRNOTAVAIL", ...),
// "timeout" for the program's own deadline, "EOF"/"unexpected EOF" for a stream that ended
// too early, or a short description. For client mode expect-reset, "ECONNRESET" is the
// expected outcome. ElapsedMS runs from connect (client) or accept (server) to the end of
// the connection's handling.
type Record struct {
	Conn      int     `json:"conn"`
	Local     string  `json:"local"`
	Remote    string  `json:"remote"`
	Sent      int64   `json:"sent"`
	Received  int64   `json:"received"`
	Error     string  `json:"error"`
	ElapsedMS float64 `json:"elapsed_ms"`
}

// output serialises lines written by concurrent connection handlers.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *output) line(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	io.WriteString(o.w, s+"\n")
}

func (o *output) record(r Record) {
	b, _ := json.Marshal(r)
	o.line(string(b))
}

func elapsedMS(start time.Time) float64 {
	return float64(time.Since(start).Microseconds()) / 1000
}

// errName names an error for Record.Error.
func errName(err error) string {
	errnos := []struct {
		errno syscall.Errno
		name  string
	}{
		{syscall.ECONNRESET, "ECONNRESET"},
		{syscall.EPIPE, "EPIPE"},
		{syscall.ECONNREFUSED, "ECONNREFUSED"},
		{syscall.ETIMEDOUT, "ETIMEDOUT"},
		{syscall.ECONNABORTED, "ECONNABORTED"},
		{syscall.EHOSTUNREACH, "EHOSTUNREACH"},
		{syscall.ENETUNREACH, "ENETUNREACH"},
		{syscall.EADDRNOTAVAIL, "EADDRNOTAVAIL"},
		{syscall.EADDRINUSE, "EADDRINUSE"},
	}
	switch {
	case err == nil:
		return ""
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	for _, e := range errnos {
		if errors.Is(err, e.errno) {
			return e.name
		}
	}
	var m mismatch
	if errors.As(err, &m) {
		return string(m)
	}
	return err.Error()
}

// mismatch is an error whose text is the whole of Record.Error.
type mismatch string

func (m mismatch) Error() string { return string(m) }
