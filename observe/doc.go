// Package observe watches what real sockets go through during a TCP teardown: the
// states each side enters and when, retransmissions and the state they happen in,
// resets sent and received, the timewait socket that outlives a closed connection, and
// sockets left in CLOSE_WAIT by applications that forget close().
//
// # Sources
//
// Two kernel interfaces are combined, because neither sees everything:
//
//   - Tracepoints (sock:inet_sock_set_state, tcp:tcp_retransmit_skb,
//     tcp:tcp_retransmit_synack, tcp:tcp_send_reset, tcp:tcp_receive_reset), read as text
//     from trace_pipe of a tracefs instance of finproxy's own
//     (/sys/kernel/tracing/instances/finproxy-<pid>-<n>). They give every state change of
//     a full socket, exact to the microsecond, but nothing of timewait sockets and no
//     network namespace.
//   - sock_diag (netlink inet_diag, what ss uses), polled every Options.PollInterval in
//     the namespace of the application (Options.NetNS), or in several (Options.NetNSs:
//     a client and a server namespace, merged into one timeline). It lists timewait sockets (TIME_WAIT, and
//     FIN_WAIT2 of an orphan) with their timer, and full sockets with their inode (hence
//     their owning process, found in /proc/PID/fd), uid and queues.
//
// Tracefs text rather than eBPF: it needs nothing but the kernel (no compiler, no
// generated objects, no loader library, no BTF at run time), the volume is small (state
// changes and resets, not packets: parsing text costs nothing that matters), and a
// private instance leaves the global trace buffer and any other tracer alone. The
// instance gets trace_clock "mono", the events are filtered by port in the kernel (event
// filters "sport == P || dport == P"; tcp_send_reset carries only sockaddr arrays, which
// filters cannot compare, so it is filtered here), and it is removed on Close; instances
// left behind by a finproxy that died (their pid is gone) are removed by New.
//
// # Clock
//
// trace_clock "mono" is CLOCK_MONOTONIC (checked here: a trace_marker write made
// between two clock_gettime(CLOCK_MONOTONIC) calls is stamped between them). Events
// carry that time as Mono, and as Time on Go's clock through Clock, one paired sample of
// time.Now() and CLOCK_MONOTONIC: Time = sample + (Mono - monoSample). The result keeps
// Go's monotonic reading, which on Linux is CLOCK_MONOTONIC, so comparing it with a
// time.Now() taken by the fault engine (a segment verdict) is exact; Clock.Mono goes the
// other way, and Observer.Annotate puts such external events on a connection's timeline.
// sock_diag polls are stamped with CLOCK_MONOTONIC read around each dump.
//
// What the kernel's tracepoints and sock_diag report in each case (measured on Linux 6.18),
// which the code relies on, is in docs/kernel-facts.md.
//
// # Timeline
//
// Each connection (one incarnation of a 4-tuple) has a client side (the one that sent
// the SYN; when not seen, the side whose port is not a listening port) and a server
// side. A side lists the states it entered: a client from SYN_SENT, a server from
// SYN_RECV, each with its entry time, dwell and source. X -> CLOSE from FIN_WAIT2 or
// CLOSING without a reset is a handoff, not a close: the side stays in FIN_WAIT2 (or
// CLOSING) and is marked HandedToTimewait until sock_diag shows the timewait socket
// (then FIN_WAIT2 and TIME_WAIT follow from it) or a poll begun after the handoff does
// not (then it really closed, at the handoff's time: no timewait bucket, say). CLOSE
// appears when a full socket really closes and when a timewait socket ends.
//
// Times of what only sock_diag sees come from the timewait timer, not from the poll: the
// timer is set to 60 s (TCP_TIMEWAIT_LEN) when the socket enters TIME_WAIT and again
// when it re-acknowledges a retransmitted FIN, so each sighting bounds that moment to
// within a jiffy, and successive sightings narrow it. TIME_WAIT's entry is thus exact to
// a few milliseconds and timer restarts (scenario 4's "the 2*MSL timer restarts") are
// reported with their time. When the timer agrees with the handoff, TIME_WAIT is put at
// the handoff (the socket was born in TIME_WAIT); an orphan whose peer's FIN arrives
// within a jiffy of the handoff cannot be told from that.
//
// With the tracepoints running, sock_diag adds states only to sides the tracepoints
// said nothing about (connections older than the Observer), from their second sighting.
// Without them (no tracefs), every state comes from the polls, within a poll interval.
//
// # Limits
//
// The tracepoints have no namespace: connections of other namespaces with the same ports
// are reported too, unless Filter.Addrs tells them apart. A side living in a namespace
// sock_diag does not poll (it never listed a socket with that side's address) keeps
// HandedToTimewait after its handoff: its timewait socket can be neither seen nor missed;
// for the same reason its CLOSE_WAIT is reported as a leak on the tracepoint's word alone. A timewait socket killed
// within one poll interval of its birth (RST, reuse by a new SYN) is taken for a close
// without timewait. Events lost by the ring buffer are counted in Stats.LostEvents and a
// CLOSE_WAIT whose end was lost is not reported as a leak once sock_diag no longer sees
// the socket.
package observe
