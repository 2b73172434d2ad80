// Package rules is finproxy's rule engine: the model of a fault scenario's rules (Config:
// the target and the rules, as the engine runs them), a tracker that follows every TCP
// connection through its handshake and teardown from the segments themselves, matching
// of segments against rules, the clock, and the actions (pass, drop, delay, hold, merge,
// ...) that decide each segment's fate.
//
// The package knows nothing of netlink or iptables: segments come in as Packet values and
// verdicts go out through a Sink, so the whole engine can be driven by recorded segment
// sequences in tests. Nor does it know the scenario file: package config reads it, with its
// [lab] and [expect] sections, and builds a Config from it.
//
// Actions follow one pattern (after Shopify/toxiproxy's toxics): one file per action, a
// struct whose exported fields carry the action's TOML parameters, registered by name with
// Register in an init function.
package rules
