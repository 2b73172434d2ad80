// Package verify checks the [expect] section of a scenario against what was observed in a
// run: the states, retransmissions, resets and dwell times of the connection's two sockets
// (package observe), the CLOSE_WAIT leaks the observer reported, the applications' exit
// codes and the event log of the fault engine. It never looks at the rules: an expectation
// holds when the kernel showed it, not when a rule meant it.
//
// Check returns one line per failed expectation, saying what was wanted and what was seen
// instead, such as
//
//	client states: want ESTABLISHED → FIN_WAIT1 → FIN_WAIT2 → TIME_WAIT in order; saw SYN_SENT → ESTABLISHED → FIN_WAIT1 → TIME_WAIT (no FIN_WAIT2 after FIN_WAIT1)
//	server retransmits: want one in LAST_ACK; saw none
//	segment client has FIN verdict drop: want at least 2, saw 1
package verify
