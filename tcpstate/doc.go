// Package tcpstate names the kernel's TCP states (include/net/tcp_states.h): the one list
// the observer reports and the config's [expect] takes.
package tcpstate
