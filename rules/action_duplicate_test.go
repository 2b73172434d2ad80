package rules

import (
	"bytes"
	"testing"
	"time"
)

func TestDuplicateValidate(t *testing.T) {
	paramErr(t, (&DuplicateAction{Copies: -1}).Validate(), "copies")
	paramErr(t, (&DuplicateAction{Copies: MaxCopies + 1}).Validate(), "copies")
	if err := (&DuplicateAction{Copies: 3}).Validate(); err != nil {
		t.Error(err)
	}
}

// The client's FIN (testdata/seq/lost-fin.txt plays it twice) is passed and copied twice,
// 10 ms apart, after each original: byte for byte, checksums completed.
func TestDuplicateAction(t *testing.T) {
	m := newMHarness(t, cfgOf(rule("dup-fin", Match{Side: Client, HasFlags: fFIN, Nth: 1}, "duplicate",
		&DuplicateAction{Delay: Duration(10 * time.Millisecond), Copies: 2})), Options{})
	m.play(loadSeq(t, "four-way-close.txt"))
	m.clk.Advance(time.Second)
	var dups []string
	for _, e := range m.events {
		if bytes.HasSuffix([]byte(e), []byte("injected")) {
			dups = append(dups, e)
		}
	}
	want := []string{"0 client FIN|ACK accept dup-fin/duplicate held=10ms injected", "0 client FIN|ACK accept dup-fin/duplicate held=20ms injected"}
	if len(dups) != 2 || dups[0] != want[0] || dups[1] != want[1] {
		t.Errorf("copies %q, want %q", dups, want)
	}
	inj := m.injectedSegs()
	fin := m.record(slicesIndexFunc(m.records, func(r Record) bool { return r.Rule == "dup-fin" && !r.Injected }))
	for _, s := range inj {
		if s.Seq() != fin.Seq || s.Ack() != fin.Ack || s.Flags() != fin.Flags {
			t.Errorf("copy %v of %+v", s, fin)
		}
	}
	m.wantCounters(Counters{Rule: "dup-fin", Matched: 1, Passed: 1, Injected: 2})
}

func slicesIndexFunc[T any](s []T, f func(T) bool) int {
	for i, v := range s {
		if f(v) {
			return i
		}
	}
	return -1
}
