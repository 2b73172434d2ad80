// Package mutate rewrites and crafts TCP segments over IPv4 and IPv6, for the verdict of a
// queued segment (the kernel takes the returned bytes in place of the packet) and for
// segments finproxy sends itself through a raw socket.
//
// Parse decodes a packet with gopacket's DecodingLayerParser into a Segment, whose methods
// change it: flags (SetFlags, ClearFlags), sequence and acknowledgment numbers (SetSeq,
// MoveSeq, SetAck, MoveAck), the window (SetWindow), options (StripOptions, KeepOptions,
// StripTimestamps, SetTimestamps), the payload (SetPayload, Append: the payload of the
// segment that follows in the stream) and the ports (SetSrcPort, SetDstPort: rewriting a
// client port). Bytes serializes it again with gopacket (SerializeOptions FixLengths and
// ComputeChecksums, the TCP checksum over the IPv4 or IPv6 pseudo-header). Build and Reset
// craft new segments.
//
// Whatever gopacket produced is checked once more by Check, which recomputes the lengths
// and the IPv4 header and TCP checksums on its own, without gopacket: a rewrite that would
// give the kernel a packet with a wrong length or checksum (which it drops silently) is an
// error instead.
//
// Parse refuses what it cannot give back whole: truncated packets (a queue's copy range
// shorter than the packet), IPv4 fragments, IPv6 extension headers and malformed TCP
// options (ErrUnsupported: the segment is TCP, and the rules see it, but serializing it
// again would lose or repair what gopacket cannot parse), and anything that is not TCP.
//
// The package knows nothing of queues, rules or observation; it imports gopacket and
// package segment (flags) only.
package mutate
