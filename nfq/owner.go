package nfq

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Owner names the process whose hooks they are: its pid and its start time (field 22 of
// /proc/PID/stat, clock ticks since boot), so that a pid the kernel gave to another
// process since is not taken for the owner. The zero Owner is "unknown" (rules of an
// older finproxy, or of a spec without Owner): such rules count as left by a dead run.
type Owner struct {
	PID   int
	Start uint64
}

// IsZero reports whether o is the unknown owner.
func (o Owner) IsZero() bool { return o == Owner{} }

func (o Owner) String() string {
	if o.IsZero() {
		return "unknown owner"
	}
	return "pid " + strconv.Itoa(o.PID)
}

// comment is the text of the comment every rule of o's hooks carries:
// "finproxy pid=P start=S", or "finproxy" for the unknown owner.
func (o Owner) comment() string {
	if o.IsZero() {
		return Comment
	}
	return fmt.Sprintf("%s pid=%d start=%d", Comment, o.PID, o.Start)
}

// parseComment reads a rule comment: ours is false when finproxy did not write it;
// o is zero for the plain "finproxy" of an unknown owner.
func parseComment(c string) (o Owner, ours bool) {
	if c == Comment {
		return Owner{}, true
	}
	rest, ok := strings.CutPrefix(c, Comment+" ")
	if !ok {
		return Owner{}, false
	}
	var pid, start string
	for _, f := range strings.Fields(rest) {
		if v, ok := strings.CutPrefix(f, "pid="); ok {
			pid = v
		} else if v, ok := strings.CutPrefix(f, "start="); ok {
			start = v
		}
	}
	p, perr := strconv.Atoi(pid)
	s, serr := strconv.ParseUint(start, 10, 64)
	if perr != nil || serr != nil || p <= 0 {
		// Another text after "finproxy ": ours, owner unknown.
		return Owner{}, true
	}
	return Owner{PID: p, Start: s}, true
}

// ruleComment returns the argument of a rule's --comment, if it has one.
func ruleComment(spec []string) (string, bool) {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "--comment" {
			return spec[i+1], true
		}
	}
	return "", false
}

// Self returns the calling process as an Owner.
func Self() (Owner, error) {
	pid := os.Getpid()
	start, _, err := procStat(pid)
	if err != nil {
		return Owner{}, fmt.Errorf("nfq: read own start time: %w", err)
	}
	return Owner{PID: pid, Start: start}, nil
}

// procStat reads the start time and the state letter of a process from /proc/PID/stat.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// "pid (comm) state ppid ...": comm may hold blanks and parentheses; the last ')' ends it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errors.New("malformed /proc/PID/stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed /proc/PID/stat: %w", err)
	}
	return start, f[0][0], nil
}

// Alive reports whether the owner still runs: a process with its pid and start time
// exists and is not a zombie (a killed process is a zombie until its parent reaps it).
// The unknown owner is never alive.
func (o Owner) Alive() bool {
	if o.IsZero() {
		return false
	}
	start, state, err := procStat(o.PID)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		// Unreadable (hidepid, a malformed line): the owner may be alive; never take a
		// live run's hooks for stale.
		return true
	}
	return start == o.Start && state != 'Z' && state != 'X'
}
