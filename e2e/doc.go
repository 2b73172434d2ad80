// Package e2e holds finproxy's end-to-end tests: the finproxy binary, real applications
// (the built-in Go servers and clients, and Debian's socat) and real kernels, in network
// namespaces each test creates and removes. They need root; in CI (FINPROXY_PRIVILEGED=1)
// a test that cannot run fails instead of skipping.
package e2e
