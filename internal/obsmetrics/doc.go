// Package obsmetrics exports what an observe.Observer sees as Prometheus metrics: the
// observed sockets by state and side, retransmissions, resets and CLOSE_WAIT leaks by
// process (finproxy serve's /metrics, finproxy watch --metrics).
package obsmetrics
