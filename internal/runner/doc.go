// Package runner wires the pieces of `finproxy run` together: the NFQUEUE loop (nfq), the
// segment decoder (segment), the rule engine (rules), the iptables hooks (nfq) and the event
// log. It owns the order of start-up and teardown that keeps a fault tool safe:
//
//	start:    bind the queue, then install the hooks (no rule ever points at an unbound queue
//	          for longer than a crash; --queue-bypass covers that window)
//	teardown: give every held or delayed segment its verdict, then remove the hooks,
//	          then close the queue — on every exit path, panics included.
package runner
