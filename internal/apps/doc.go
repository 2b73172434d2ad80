// Package apps holds finproxy's built-in test applications: a TCP server and a TCP client,
// written with the standard library's net package, whose modes drive a connection into
// each teardown scenario of the scenario table deterministically (who closes first,
// close() or shutdown(SHUT_WR), half-close, leak). finproxy runs them as the hidden
// subcommand `finproxy app server|client ...` inside lab namespaces; cmd/fpapp runs them
// on their own.
//
// # Server
//
//	app server --listen ADDR:PORT --mode MODE [--count N] [--lines K] [--interval D]
//	           [--close-delay D] [--hold D] [--timeout D]
//
// It prints "ready" on stdout once listening (and "app server: listening on ADDR, mode M"
// on stderr, which gives the port when --listen used port 0), then one JSON Record per
// connection when that connection's handling ends (for leak: when EOF was read and the
// socket is left in CLOSE_WAIT). It serves --count connections (default 1; 0 = until
// stopped), concurrently, then stops listening and exits: 0 if every connection did what
// its mode expects, 1 otherwise. Modes: echo-close, reply-close, reply-wait-close, leak,
// half-close, simultaneous, sink (see the Server* constants).
//
// # Client
//
//	app client --connect ADDR:PORT --mode MODE [--count N] [--timeout D] [--bytes B]
//	           [--local-port P] [--pause D] [--expect-bytes N]
//
// It makes --count connections one after the other and prints one JSON Record per
// connection on stdout; it exits 0 only if every connection did what its mode expects
// (1 otherwise, reasons on stderr). Modes: request-close, request-shutdown, send-close,
// send-shutdown-read, request-read-close, expect-reset (see the Client* constants).
//
// # Wire behaviour
//
// Both sides close with the default linger (a FIN, never an abortive RST) and switch TCP
// keepalive off, so that no probe appears on the wire while a socket idles in FIN_WAIT2
// or CLOSE_WAIT. Go's default TCP_NODELAY stays on: each write leaves as its own segment.
// The request on connection i is RequestLine(i) ("request <i>\n"); the reply is
// ReplyPrefix + request; the send-* modes send Payload(B); half-close sends
// HalfCloseLine(j) ("line %04d\n", 10 bytes).
//
// Pairings used by the scenarios (client mode / server mode):
//
//	request-close      / reply-wait-close  client closes first, four-way close (1-4, 9);
//	                                       --close-delay 300ms (> the 200 ms delayed-ACK
//	                                       maximum) keeps the server's ACK of the client's
//	                                       FIN and its own FIN apart (four segments)
//	request-close      / reply-close       server closes first
//	request-shutdown   / reply-wait-close  client closes first but keeps its socket (9 shutdown-only, 10)
//	send-close         / echo-close, sink  client sends then closes (3, 7)
//	send-close         / leak              CLOSE_WAIT leak (8)
//	send-shutdown-read / half-close        server sends from CLOSE_WAIT (6)
//	request-read-close / simultaneous      both close at once (5)
//	expect-reset       / reply-wait-close  reset injected toward the client (14)
package apps
