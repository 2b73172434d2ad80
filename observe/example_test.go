package observe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/finproxy/finproxy/observe"
)

// Watch the connections of port 8080 in namespace "lab-b" while something else makes
// them, then print the report and the CLOSE_WAIT leaks.
func Example() {
	o, err := observe.New(observe.Options{
		Filter: observe.Filter{Ports: []uint16{8080}},
		NetNS:  "lab-b",
	})
	if err != nil {
		log.Fatal(err) // neither the tracepoints nor sock_diag could start
	}
	for _, w := range o.Warnings() {
		log.Print(w) // a source that did not start, stale instances removed, ...
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()

	// ... run the scenario; the fault engine may put its verdicts on the timelines:
	// o.Annotate(observe.Note{At: time.Now(), Src: src, Dst: dst, Text: "drop FIN"})

	// Wait until what happened so far has been seen by both sources.
	if err := o.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(o.Snapshot())
	for _, l := range o.Leaks(30 * time.Second) {
		fmt.Printf("CLOSE_WAIT leak %v <- %v for %v, held by %+v\n", l.Local, l.Remote, time.Duration(l.Age), l.Owner)
	}
	cancel()
	if err := <-done; err != nil { // Run removes the tracefs instance before returning
		log.Fatal(err)
	}
}

// A live view: every event as a JSON line.
func ExampleObserver_Events() {
	o, err := observe.New(observe.Options{Filter: observe.Filter{Ports: []uint16{8080}}})
	if err != nil {
		log.Fatal(err)
	}
	events := o.Events() // before Run, not to miss any
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go o.Run(ctx)
	enc := json.NewEncoder(os.Stdout)
	for ev := range events { // closed when Run returns
		enc.Encode(ev)
	}
}
