// Package story owns what happened on one TCP connection, told once: its Story is the
// ordered list of events (a segment finproxy queued or made with its verdict, rule and
// sequence numbers relative to each side's initial one; a side's state change, from and
// to; a retransmission; a reset sent or received; a TIME_WAIT timer restart; a note),
// built from the event log's records (eventlog.Record) and the observation
// (observe.Connection), which share the wall clock.
//
// Everything that shows a connection renders a Story: the ladder lines of demo and of a
// lab's failed run (WriteLadder), finproxy run's timelines at exit (WriteTimelines), the
// SVG ladder (package viz takes its rows from a Story) and JSON (a Story encodes as
// is). A new output format is one more renderer of the same events.
package story
