// Package viz draws what happened to a TCP connection under finproxy as the picture the
// articles on TCP teardown are built around: a ladder diagram. The client and the server
// are two vertical timelines (time flows down), each segment finproxy saw is an arrow from
// its sender to its receiver through finproxy in the middle, and each side's state is
// written beside its line at the moment the kernel changed it.
//
// Everything comes from what really happened: the rows are the events of the
// connection's story (package story), built from the event log's records (the segments
// and their verdicts) and the observer's connection (the states, retransmissions and
// resets). Both are on the same wall clock and share one axis.
//
//   - A dropped segment ends in a cross at finproxy.
//   - A held or delayed segment leaves its sender at its queue time, waits on finproxy's
//     line (a bar) and goes on at its verdict time; a merged one ends in a cross after
//     its wait.
//   - A segment finproxy made (injected) starts at finproxy; one it rewrote changes
//     colour and dash after finproxy. Both are labelled.
//   - Retransmitted segments (the same sequence space sent again) are marked, and so are
//     the retransmissions and resets the kernel reported beside each line.
//   - Gaps between events are compressed (logarithmically), and gaps over 50 ms are cut
//     with a break mark saying how long they were, so that a 200 ms retransmission
//     timeout, a 1 s SYN timer or a 60 s TIME_WAIT keep the picture readable.
//
// viz only renders: its inputs are values, its outputs go to an io.Writer. It depends on
// no queue, netlink socket or namespace (see TestImports).
package viz
