// Package segment decodes queued IPv4 and IPv6 TCP segments into a small,
// allocation-free value that the rule engine matches on.
//
// The decoder is built on gopacket's DecodingLayerParser and reuses its layer
// structs between calls, so decoding on the hot path does not allocate.
package segment
