// Package eventlog owns the record finproxy writes for every segment it gave a verdict to:
// the connection and the side that sent it, its flags and numbers, the rule that acted,
// the verdict and how long the segment waited (Record, one line of the event log). The
// engine (rules) writes records, the observer (observe) carries them on a connection's
// timeline, and what tells a connection's story (story) reads them: a leaf that all
// three import, so that a record travels typed from the engine to every renderer.
package eventlog
