package runner

import (
	"errors"
	"log/slog"
	"reflect"
	"sync"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/rules"
)

// pipeline is one queue of a run with what serves it: the queue's reader decodes each
// segment and hands it to the queue's engine, whose verdicts go back through the sink.
// With several queues (Options.Queues), --queue-balance keeps each connection on one
// queue, so each engine sees every segment of its connections and none of the others.
type pipeline struct {
	s   *sink
	eng *rules.Engine
	q   *nfq.Queue
}

// queueCount is the number of queues a run uses: Options.Queues, but one when the config
// or the options need a single engine, or when the numbers would pass 65535.
//
//   - global_limit counts a rule's actions over the whole run, probability draws from one
//     seeded generator in segment order: each queue's engine would count and draw alone.
//   - The capture (--pcap) pairs each record with its packet by packet id, and the ids of
//     different queues overlap.
func queueCount(o Options, cfg *rules.Config, spec nfq.HookSpec, log *slog.Logger) int {
	n := max(o.Queues, 1)
	if n == 1 {
		return 1
	}
	why := ""
	for _, r := range cfg.Rules {
		if r.Match.GlobalLimit > 0 || (r.Match.Probability > 0 && r.Match.Probability < 1) {
			why = "rule " + r.Name + " counts or draws across connections (global_limit, probability)"
			break
		}
	}
	switch {
	case why != "":
	case o.PcapPath != "":
		why = "the capture pairs records with packets by id, which repeat across queues"
	case int(spec.Queue)+n-1 > 0xffff:
		why = "queue numbers go up to 65535"
	}
	if why != "" {
		log.Warn("one queue instead of several", "queues", n, "reason", why)
		return 1
	}
	return n
}

// serialized makes f safe to call from several goroutines, one call at a time: the
// event log's consumers (Options.OnRecord among them) see one record at a time, as with
// one engine.
func serialized(f func(rules.Record)) func(rules.Record) {
	var mu sync.Mutex
	return func(r rules.Record) {
		mu.Lock()
		defer mu.Unlock()
		f(r)
	}
}

// sumCounters adds up the engines' counters, rule by rule (every number field).
func sumCounters(pipes []*pipeline) []rules.Counters {
	var out []rules.Counters
	for _, p := range pipes {
		cs := p.eng.Counters()
		if out == nil {
			out = cs
			continue
		}
		for i := range out {
			a, b := reflect.ValueOf(&out[i]).Elem(), reflect.ValueOf(cs[i])
			for f := range a.NumField() {
				if a.Field(f).Kind() == reflect.Uint64 {
					a.Field(f).SetUint(a.Field(f).Uint() + b.Field(f).Uint())
				}
			}
		}
	}
	return out
}

// kernelStats adds up the kernel's counters of the queues (Queue: the first one's).
func kernelStats(pipes []*pipeline) (*nfq.KernelQueueStats, error) {
	var sum *nfq.KernelQueueStats
	var errs []error
	for _, p := range pipes {
		ks, err := p.q.KernelStats()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if sum == nil {
			sum = &ks
			continue
		}
		sum.Waiting += ks.Waiting
		sum.Dropped += ks.Dropped
		sum.UserDropped += ks.UserDropped
		sum.IDSequence += ks.IDSequence
	}
	if sum == nil {
		return nil, errors.Join(append(errs, errors.New("no queue"))...)
	}
	return sum, errors.Join(errs...)
}
