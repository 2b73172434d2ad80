// Package nfq takes TCP segments out of the kernel's path and gives them back:
// an NFQUEUE reader (Open, Queue) and the iptables rules that feed it (Install,
// Hooks, Cleanup). The rule engine decides; nfq only carries segments and
// verdicts. It knows nothing of finproxy's rules or configuration files.
//
// # Queue
//
// Open binds a queue number and calls the Handler for every packet, one at a time, from
// one reader goroutine. Verdicts (Accept, Drop, AcceptModified) may be given later, from
// any goroutine, in any order: that is how delays and holds work. A verdict method
// returns once the verdict is handed to the queue's writer goroutine, which writes the
// verdicts in the order they were given (writer.go says why); Flush waits until they are
// written, Close writes them all before it closes the socket. Data given to
// AcceptModified must not change until then.
//
// The queue is github.com/florianl/go-nfqueue/v2 (v2.0.2, with mdlayher/netlink v1.11.2
// or later, which fixes a verdict blocked behind a blocked receive). What finproxy adds on
// top of it allocates nothing per packet (the runner's hot-path test drives it through a
// FakeKernel: 0 allocations from the Handler call to the verdict). go-nfqueue itself
// allocates per message (its attribute pointers, the verdict's netlink message) and,
// through mdlayher/socket, starts a goroutine per receive and send that watches the
// context; measured here, that library cost is most of what a queued segment costs
// (see the README's benchmark section). finproxy keeps it small by queueing only what the
// rules need, rather than by replacing the library.
// The kernel's and the library's pitfalls it handles, each measured here, are listed in
// docs/kernel-facts.md.
//
// Stats.DecisionLatency is the time from the reader's receipt of a packet to the moment its
// verdict is given, Stats.VerdictLatency to the write of the verdict (latency.go: the
// wait for the writer included), Stats.VerdictDoneLatency to that write's return. The
// two differ because a verdict's write does more than hand over a decision: the kernel
// reinjects the packet within the call, and the softirq processing that follows
// (forwarding it, the receiver's TCP, whatever that sends back through the hook, queued
// again) runs in the writer's context before the write returns (measured in the lab under
// connection churn: 45 µs at p50, 0.5 ms at p99; without finproxy the same work runs in the
// sender's softirq).
//
// OpenFake gives a Queue whose kernel is a FakeKernel: the same Handler calls, counters,
// verdict latency and verdict methods without a socket, for tests and benchmarks of what
// sits on a queue.
//
// # Hooks
//
// Install adds, in the mangle table, a chain FINPROXY-Q<queue> and jumps to it
// at the top of the built-in chains, tagged "-m comment --comment finproxy":
// OUTPUT and INPUT (with "! -i lo": loopback traffic passes both hooks and is
// queued once, in OUTPUT) for Mode Local, FORWARD for Mode Forward. The jumps
// match TCP to and from the server (port and/or addresses) and, with Scope Control, only
// segments carrying SYN, FIN or RST, so that bulk data never enters the chain. The chain skips
// packets carrying SkipMark (finproxy's own injected segments), then queues
// SYN, FIN and RST (Scope Control) or, with a connmark bit set on the first
// FIN (FromFIN) or on the SYN (All), every later segment of the connection,
// and, in every scope, every segment conntrack finds INVALID (it has no connection, so no
// connmark: delayed, duplicated or port-rewritten segments would slip past). That rule
// also makes the kernel reassemble fragments before the hooks: conntrack's use in a
// namespace turns on nf_defrag_ipv4 and nf_defrag_ipv6 there (PREROUTING and OUTPUT,
// priority -400). Without them FORWARD sees IPv4 and IPv6 fragments and INPUT IPv6 ones
// (IPv4 is reassembled before INPUT anyway), whose later parts carry no TCP header to
// match: a FIN in fragments passed unseen (measured).
// Every NFQUEUE rule carries --queue-bypass (unless HookSpec.Bypass is off):
// with no process bound, traffic flows. With HookSpec.Queues > 1 the rules spread
// segments over that many queues with --queue-balance; the kernel hashes only the
// two addresses (measured in TestQueueBalance: both directions of a connection on one
// queue, connections from 16 client addresses over both), so one client talking to
// one server uses one queue whatever Queues is. testdata/hooks_*.golden lists the exact
// rules for a few specs; the privileged tests check that `iptables -S` prints
// them exactly as the in-memory Fake does.
//
// Install after Open: only a bound queue proves that no live finproxy uses the
// chain, so a chain of that name found then is stale and replaced (logged).
// Install undoes itself on error; Hooks.Remove takes out exactly what Install
// added; Cleanup removes every FINPROXY chain and finproxy rule from any run.
//
// The iptables programs act on the network namespace of the thread that starts
// them; NewIPTables uses github.com/coreos/go-iptables.
package nfq
