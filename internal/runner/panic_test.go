package runner

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/rules"
)

// panicAction is an action with a bug: it panics on every segment. No registered action
// may (FuzzEngine in config checks that none does on a config check accepts); this one
// stands for the bug that is found anyway.
type panicAction struct{}

func (panicAction) Apply(*rules.Context) { panic("a bug") }

// testActions are the engine's actions and the panicking one.
var testActions = func() *rules.Registry {
	r := rules.DefaultRegistry().Clone()
	r.Register("test-runner-panic", func() rules.Action { return panicAction{} })
	return r
}()

// A run whose action panics accepts the segment, logs the panic while the run goes on
// (not only at its end), and reports every panic in the rule's counters.
func TestRunActionPanics(t *testing.T) {
	parsed, err := config.ParseWith([]byte(`
[target]
port = 8080
address = ["10.0.0.2"]
[[rule]]
name = "buggy-fin"
has_flags = "FIN"
action = "test-runner-panic"
`), "panic.toml", testActions)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &parsed.Config
	var log syncBuffer
	h := startHotpath(t, func(o *Options) {
		o.Config = cfg
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	var accepted []uint32
	h.k.OnVerdict = func(id uint32, accept bool, _ []byte) {
		if accept {
			accepted = append(accepted, id)
		}
	}
	cs, ss := h.handshake(40000)
	h.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0)
	h.k.Flush()
	if !strings.Contains(log.String(), `level=ERROR msg="action panicked; the segment is accepted" rule=buggy-fin`) {
		t.Errorf("the panic is not in the log while the run goes on:\n%s", log.String())
	}
	h.send(hpClient, hpServer, 40000, 8080, cs, ss, tFIN|tACK, 0) // retransmitted
	h.k.Flush()
	res := h.stop()
	if len(accepted) != 5 {
		t.Errorf("accepted %v, want all 5 segments", accepted)
	}
	if c := res.Counters; len(c) != 1 || c[0].Matched != 2 || c[0].Panicked != 2 || c[0].Passed != 0 {
		t.Errorf("counters %+v, want 2 matched, 2 panicked", c)
	}
}
