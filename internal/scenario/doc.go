// Package scenario runs one fault scenario end to end in a lab topology: a real server in
// the server namespace, `finproxy run` on the router's FORWARD path, a real client in the
// client namespace; it collects the event log and the applications' output.
package scenario
