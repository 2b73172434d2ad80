// Package lab builds finproxy's test network: three network namespaces, client, router and
// server, joined by two veth pairs, so that real applications talk TCP through a router
// whose forwarding path finproxy can hook (NFQUEUE) without touching the host's network.
//
//	client ns                    router ns                         server ns
//	to-router 198.18.1.2/24 <--> to-client 198.18.1.1/24
//	          fd00:f1:1::2/64              fd00:f1:1::1/64
//	                             to-server 198.18.2.1/24 <--> to-router 198.18.2.2/24
//	                                       fd00:f1:2::1/64              fd00:f1:2::2/64
//
// Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544) and from
// unique-local IPv6 space. The client and the server have a default route (IPv4 and IPv6)
// via the router and nothing else; the router forwards between its two links and has no
// default route. No link leads out of the three namespaces: the veths are created directly
// inside them and never exist in the root namespace.
//
// New makes a topology with unique namespace names, <prefix>-<8 hex>-client|router|server
// (prefix "fp" by default), as `ip netns list` shows them. On every veth, segmentation
// and receive offloads (tso, gso, gro) and transmit checksum offload are off, so that the
// segments NFQUEUE and captures see are those a real network carries; duplicate address
// detection is off, so IPv6 addresses are usable at once. Per-namespace sysctls
// (Options.Sysctls, net.* keys only) are written inside the namespaces and read back. New
// ends by waiting for every link to be operationally up and making a TCP connection from
// the client to the server over IPv4 and over IPv6 (ended with a reset, so no TIME_WAIT
// socket is left); if anything fails, or ctx ends, it removes what it made.
//
// Close removes the namespaces and their veths. A process that crashes without Close
// leaves its namespaces behind; Cleanup removes those of dead runs. Liveness comes from a
// lock: each run holds flock(2) on /run/finproxy/lab/<prefix>-<id>.lock until Close, and
// the kernel drops it when the process dies, so Cleanup never touches a topology in use
// (by this or another process, such as a parallel test package).
//
// Command runs a program inside a namespace (through `ip netns exec`); Do runs Go code on
// a thread inside one (for sockets, netlink or /proc/sys/net of that namespace).
//
// New, Close and Cleanup need root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Besides the links'
// own traffic, IPv6 in the lab sends its usual link-local chatter (router solicitations,
// MLD reports); none of it leaves the lab.
package lab
