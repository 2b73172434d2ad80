// Package nstest gives privileged tests a network namespace of their own, as cilium/ebpf's
// test helpers do: created per test, removed in t.Cleanup.
//
// A test that lacks root or a kernel feature skips with the reason; with
// FINPROXY_PRIVILEGED=1 (set by CI) such a skip fails the test instead.
package nstest
