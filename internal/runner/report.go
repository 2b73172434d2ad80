package runner

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/finproxy/finproxy/rules"
)

// Report is the document `finproxy run --report FILE` writes at exit: the config, what
// each rule did, the queue's health and, observed, the connections' timelines on both
// sides with the segments and their verdicts interleaved (observe.Connection.Notes, each
// carrying its event log record): every live connection and the latest finished
// ones (observe.DefaultMaxConnections), the older finished ones counted in
// Observation.Summary.
type Report struct {
	Config   ConfigInfo            `json:"config"`
	Started  time.Time             `json:"started"`
	Ended    time.Time             `json:"ended"`
	Counters []rules.Counters      `json:"counters"`
	Queue    nfq.Stats             `json:"queue"`
	Kernel   *nfq.KernelQueueStats `json:"kernel,omitempty"`
	// Undecodable counts queued packets the rules could not see (Unclassified: why, and
	// their verdict); Records the lines written to the event log (--log), 0 without one.
	Undecodable  uint64       `json:"undecodable"`
	Unclassified Unclassified `json:"unclassified"`
	Records      uint64       `json:"records"`
	// Observation says how the connections were observed; null when observation was off
	// (--no-observe).
	Observation *Observation `json:"observation"`
	// Connections are the observed connections kept in detail, in the order they were
	// first seen.
	Connections []observe.Connection `json:"connections"`
}

// ConfigInfo is the part of the config a report needs to be read on its own.
type ConfigInfo struct {
	Name        string         `json:"name"`
	File        string         `json:"file,omitempty"`
	Description string         `json:"description,omitempty"`
	Port        uint16         `json:"port,omitempty"`
	Addresses   []string       `json:"addresses,omitempty"`
	Hook        rules.HookMode `json:"hook"`
	Queue       uint16         `json:"queue"`
	Queued      string         `json:"queued"` // control, from-fin or all
	Rules       []string       `json:"rules"`
}

// Observation describes the observation of a run: its sources, what it counted and what
// did not work. With no source (no tracefs and no sock_diag) it has only Warnings.
type Observation struct {
	Sources  observe.Sources `json:"sources"`
	Stats    observe.Stats   `json:"stats"`
	Warnings []string        `json:"warnings,omitempty"`
	// Summary counts the finished connections that are not in Connections: beyond the
	// observer's bound (observe.DefaultMaxConnections) the oldest are only counted, so
	// that a long run's memory and report stay bounded.
	Summary *observe.Summary `json:"summary,omitempty"`
}

// NewReport assembles the report of a finished run.
func NewReport(cfg *rules.Config, res *Result) *Report {
	r := &Report{
		Config:       configInfo(cfg),
		Started:      res.Started,
		Ended:        res.Ended,
		Counters:     res.Counters,
		Queue:        res.Queue,
		Kernel:       res.Kernel,
		Undecodable:  res.Undecodable,
		Unclassified: res.Unclassified,
		Records:      res.Records,
		Connections:  []observe.Connection{},
	}
	if r.Counters == nil {
		r.Counters = []rules.Counters{}
	}
	if res.Observed {
		r.Observation = &Observation{Warnings: res.ObserveWarnings}
		if o := res.Observation; o != nil {
			r.Observation.Sources, r.Observation.Stats, r.Observation.Summary = o.Sources, o.Stats, o.Summary
			r.Connections = o.Connections
		}
	}
	return r
}

func configInfo(cfg *rules.Config) ConfigInfo {
	c := ConfigInfo{Name: cfg.Name, File: cfg.File, Description: cfg.Description, Port: cfg.Target.Port,
		Hook: cfg.Target.Hook, Queue: cfg.Target.Queue, Queued: cfg.QueueScope().String(), Rules: []string{}}
	if c.Hook == "" {
		c.Hook = rules.HookLocal
	}
	if c.Queue == 0 {
		c.Queue = rules.DefaultQueue
	}
	for _, a := range cfg.Target.Addresses {
		c.Addresses = append(c.Addresses, a.String())
	}
	for _, rl := range cfg.Rules {
		c.Rules = append(c.Rules, rl.Name)
	}
	return c
}

// WriteReport writes r to path as one indented JSON document, encoded straight into the
// file (a report of thousands of connections is not held in memory twice).
func WriteReport(path string, r *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	w := bufio.NewWriterSize(f, 256<<10)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	err = enc.Encode(r)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	return nil
}

// ReadReport reads a report written by WriteReport, the notes with their event log
// records.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &r, nil
}
