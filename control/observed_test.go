package control

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/finproxy/finproxy/control/client"
)

type fakeObserved struct{ v client.Connections }

func (f *fakeObserved) Connections() (any, error) { return f.v, nil }

// Without an Observer, /v1/connections says so (404); with one, it gives its
// connections; the Observer's events reach the event streams, after the segments'.
func TestObservedConnectionsAndEvents(t *testing.T) {
	r := newRig(t, "")
	ctx := context.Background()
	var ce *client.Error
	if _, err := r.c.Connections(ctx); !errors.As(err, &ce) || ce.Status != 404 {
		t.Errorf("connections without an observer: %v, want a 404", err)
	}

	at := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	obs := &fakeObserved{client.Connections{Connections: []client.Connection{{Incarnation: 1,
		Client: client.ConnSide{Addr: "10.0.0.1:40000", States: []string{"SYN_SENT", "ESTABLISHED"}},
		Server: client.ConnSide{Addr: "10.0.0.2:8080", States: []string{"SYN_RECV"},
			Timeline: []client.StateEntry{{State: "SYN_RECV", At: at, Dwell: "1ms", Source: "trace"}}}}}}}
	srv := New(Options{Backend: r.svc, Observed: obs})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := client.New(hs.URL)
	cs, err := c.Connections(ctx)
	if err != nil || len(cs.Connections) != 1 || cs.Connections[0].Server.Timeline[0].At != at || cs.Connections[0].Client.States[1] != "ESTABLISHED" {
		t.Errorf("connections: %+v, %v", cs, err)
	}
	ev, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	srv.PublishObserved("state", map[string]any{"type": "state", "time": at, "src": "10.0.0.2:8080", "dst": "10.0.0.1:40000",
		"old": "CLOSE_WAIT", "new": "LAST_ACK", "source": "trace"})
	sc, err := ev.NextObserved()
	if err != nil || sc.Type != "state" || sc.Old != "CLOSE_WAIT" || sc.New != "LAST_ACK" || sc.Src != "10.0.0.2:8080" || !sc.Time.Equal(at) {
		t.Errorf("observed event: %+v, %v", sc, err)
	}
}
