package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/rules"
)

// eventBuffer is how many records a slow event stream may lag behind before finproxy
// drops records for it (and tells it so): the packet path never waits for a reader.
const eventBuffer = 4096

// MaxStreams bounds the event streams open at once (each holds a buffer of eventBuffer
// records): more get 503.
const MaxStreams = 16

type subscriber struct {
	ch   chan rules.Record
	obs  chan observedEvent
	lost atomic.Uint64
}

// observedEvent is an event of the Observer: a socket's state change, a retransmission,
// a reset (kind), as JSON-encodable v.
type observedEvent struct {
	kind string
	v    any
}

// PublishObserved hands an event of the Observer (kind "state", "retransmit" or "reset",
// v its JSON) to the event streams open now. It does not block: a stream that fell behind
// loses it (and is told so).
func (s *Server) PublishObserved(kind string, v any) {
	b := &s.ev
	if b.n.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.obs <- observedEvent{kind, v}:
		default:
			sub.lost.Add(1)
		}
	}
}

// broadcaster hands segment records to the event streams open now.
type broadcaster struct {
	n    atomic.Int32 // len(subs), read without the lock on the packet path
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

func (b *broadcaster) publish(r *rules.Record) {
	if b.n.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- *r:
		default:
			s.lost.Add(1)
		}
	}
}

// subscribe adds a stream; nil when MaxStreams are open.
func (b *broadcaster) subscribe() *subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) >= MaxStreams {
		return nil
	}
	s := &subscriber{ch: make(chan rules.Record, eventBuffer), obs: make(chan observedEvent, eventBuffer/4)}
	b.subs[s] = struct{}{}
	b.n.Store(int32(len(b.subs)))
	return s
}

func (b *broadcaster) unsubscribe(s *subscriber) {
	b.mu.Lock()
	delete(b.subs, s)
	b.n.Store(int32(len(b.subs)))
	b.mu.Unlock()
}

// events streams every segment's record as a server-sent event "segment" (the event
// log's JSON), and, when serve runs an Observer, the sockets' state changes ("state"),
// retransmissions ("retransmit") and resets ("reset") as it reports them, from the
// moment of the request: first a "subscribed" event, then the events; "lost" with a count when the reader fell behind; a comment every 15 s
// keeps idle connections open.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	sub := s.ev.subscribe()
	if sub == nil {
		writeError(w, &client.Error{Status: http.StatusServiceUnavailable,
			Message: fmt.Sprintf("%d event streams are open already, the most finproxy serves at once", MaxStreams)})
		return
	}
	defer s.ev.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "event: subscribed\ndata: {}\n\n"); err != nil {
		return
	}
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	var reported uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case oe := <-sub.obs:
			b, err := json.Marshal(oe.v)
			if err != nil {
				s.log.Error("event stream: encode an observed event", "err", err)
				continue
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", oe.kind, b); err != nil {
				return
			}
		case rec := <-sub.ch:
			if lost := sub.lost.Load(); lost > reported {
				if _, err := fmt.Fprintf(w, "event: lost\ndata: {\"count\": %d}\n\n", lost-reported); err != nil {
					return
				}
				reported = lost
			}
			b, err := json.Marshal(rec)
			if err != nil {
				s.log.Error("event stream: encode a record", "err", err)
				continue
			}
			if _, err := fmt.Fprintf(w, "event: segment\ndata: %s\n\n", b); err != nil {
				return
			}
			// Write what else is waiting before flushing: one flush per burst.
			for more := true; more; {
				select {
				case rec = <-sub.ch:
					if b, err = json.Marshal(rec); err == nil {
						if _, err := fmt.Fprintf(w, "event: segment\ndata: %s\n\n", b); err != nil {
							return
						}
					}
				default:
					more = false
				}
			}
		}
		fl.Flush()
	}
}
