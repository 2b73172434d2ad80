// Package control is the HTTP API of `finproxy serve`: a test drives the faults of a
// running finproxy with it (replace the rule set, switch one rule on or off, load a
// preset, read the counters, follow the verdicts), through package client or any HTTP
// client. Every rule set is validated as `finproxy check` validates a file, and refused
// with the same positioned problems, as JSON.
package control
