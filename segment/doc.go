// Package segment decodes queued IPv4 and IPv6 TCP segments into a small,
// allocation-free value that the rule engine matches on.
//
// The decoder reads the headers by hand, as the kernel does (IPv6 extension headers
// walked, TCP options skipped unread), and does not allocate when it succeeds. A packet
// it cannot read as a whole TCP segment is an error wrapping ErrNotTCP, ErrFragment or
// ErrMalformed, so that the caller can count why and act on it.
package segment
