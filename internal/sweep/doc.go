// Package sweep answers "which network faults make my service leak sockets, hang or
// fail?": it runs the user's server and client in the lab (package scenario) under each
// fault of a list (presets, generated faults on the first data segments, or configs of
// the user's), several times, and classifies what the applications' sockets and
// processes did: leaks, hangs, lingering orphans, errors. It renders the result as a
// table, report.json, index.html with ladders, and JUnit.
package sweep
