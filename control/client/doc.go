// Package client talks to the control API of `finproxy serve` (package control): it
// replaces the rule set, switches rules on and off, loads presets, reads the counters
// and follows the segments' verdicts as they are given. It needs nothing but the
// standard library, so a test suite can import it without finproxy's packet machinery.
//
// The types of this package are the API's JSON shapes.
package client
