// Package nfq takes TCP segments out of the kernel's path and gives them back:
// an NFQUEUE reader (Open, Queue) and the iptables rules that feed it (Install,
// Hooks, Cleanup). The rule engine decides; nfq only carries segments and
// verdicts. It knows nothing of finproxy's rules or configuration files.
//
// # Queue
//
// Open binds a queue number through github.com/florianl/go-nfqueue/v2 (v2.0.2,
// on mdlayher/netlink v1.11.2, which no longer blocks a verdict behind a
// blocked receive) and calls the Handler for every packet, one at a time, from
// one reader goroutine. Verdicts (Accept, Drop, AcceptModified) may be given
// later, from any goroutine, in any order: that is how delays and holds work.
// The pitfalls it handles:
//
//   - go-nfqueue sends MaxQueueLen and Copymode to the kernel as given, and 0
//     means a queue of length 0 and COPY_NONE: every packet dropped. Open always
//     sets both (4096 by default, NfQnlCopyPacket) and a copy range of 0xffff,
//     which the kernel caps at 65531 bytes. Loopback carries TCP segments of up
//     to 65535 bytes: those arrive 4 bytes short (measured); Packet.OrigLen and
//     Packet.Truncated tell.
//   - With Register, one ENOBUFS stops the reader. Open uses
//     RegisterWithErrorFunc, keeps reading on ENOBUFS and ENOENT and counts
//     them, sets NETLINK_NO_ENOBUFS and enlarges the receive buffer with
//     SO_RCVBUFFORCE (8 MiB asked; the kernel doubles it: 16 MiB measured),
//     falling back to SO_RCVBUF. With NETLINK_NO_ENOBUFS the kernel does not
//     report overruns at all: packets it could not deliver show only in the
//     kernel's user_dropped counter (KernelStats), measured with a stalled
//     reader.
//   - A verdict for an id the kernel no longer holds returns nil: the kernel's
//     ENOENT comes back on the read side (Stats.ENOENT).
//   - go-nfqueue's Close waits for a goroutine that ends only with the register
//     context: Close cancels that context first. The library's own unbind at
//     shutdown then fails ("bad file descriptor", logged at debug); closing the
//     socket unbinds anyway.
//   - Binding a queue number another socket holds in the same network
//     namespace fails with EPERM, as does binding without CAP_NET_ADMIN: Open
//     tells them apart (CapEff) and says "queue N is in use by another process".
//     Queue numbers are per namespace: Config.NetNS binds in another one.
//   - The payload points into the reader's buffer: valid during the Handler
//     call only.
//   - Packet.Time: the kernel attached no timestamp to any queued TCP packet in
//     the tests (loopback OUTPUT, veth INPUT, FORWARD), so it is the reader's
//     clock at receipt.
//   - On Close the kernel drops the packets still waiting for a verdict
//     (measured: a held SYN was retransmitted a second later).
//
// Measured as well: a full queue drops the packet and counts it in the
// kernel's "dropped"; with Config.FailOpen it passes unqueued and nothing is
// counted anywhere, so a fault tool using FailOpen cannot tell it happened
// except by KernelStats.Waiting reaching MaxLen.
//
// # Hooks
//
// Install adds, in the mangle table, a chain FINPROXY-Q<queue> and jumps to it
// at the top of the built-in chains, tagged "-m comment --comment finproxy":
// OUTPUT and INPUT (with "! -i lo": loopback traffic passes both hooks and is
// queued once, in OUTPUT) for Mode Local, FORWARD for Mode Forward. The jumps
// match TCP to and from the server (port and/or addresses). The chain skips
// packets carrying SkipMark (finproxy's own injected segments), then queues
// SYN, FIN and RST (Scope Control) or, with a connmark bit set on the first
// FIN (FromFIN) or on the SYN (All), every later segment of the connection.
// Every NFQUEUE rule carries --queue-bypass (unless HookSpec.Bypass is off):
// with no process bound, traffic flows. testdata/hooks_*.golden lists the exact
// rules for a few specs; the privileged tests check that `iptables -S` prints
// them exactly as the in-memory Fake does.
//
// Install after Open: only a bound queue proves that no live finproxy uses the
// chain, so a chain of that name found then is stale and replaced (logged).
// Install undoes itself on error; Hooks.Remove takes out exactly what Install
// added; Cleanup removes every FINPROXY chain and finproxy rule from any run.
//
// On loopback (measured; inferred for veth and other interfaces with
// segmentation offload on) one matched packet may be a GSO super-packet: the rule matches its header, then the kernel
// splits it and queues each part with its own id. A FIN ending a large write
// thus brings the data segments of the same super-packet to the queue too,
// even with Scope Control (measured); only the last part carries the FIN.
//
// The iptables programs act on the network namespace of the thread that starts
// them; NewIPTables uses github.com/coreos/go-iptables.
package nfq
