package main

import (
	"net/netip"
	"testing"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
)

// The client's end of a redirected connection (it names the listen address) joins the
// upstream's connection; other connections stay as they are.
func TestJoinRedirected(t *testing.T) {
	ap := netip.MustParseAddrPort
	st := func(s observe.State) []observe.StateEntry { return []observe.StateEntry{{State: s}} }
	conns := []observe.Connection{
		{Client: observe.Side{Addr: ap("10.0.0.1:40000"), States: st(observe.TimeWait)}, Server: observe.Side{Addr: ap("10.0.0.2:18080")}},
		{Client: observe.Side{Addr: ap("10.0.0.1:40000")}, Server: observe.Side{Addr: ap("10.0.0.2:8080"), States: st(observe.Close)}},
		{Client: observe.Side{Addr: ap("10.0.0.1:40001"), States: st(observe.Established)}, Server: observe.Side{Addr: ap("10.0.0.2:8080"), States: st(observe.Established)}},
		{Client: observe.Side{Addr: ap("10.0.0.1:40002"), States: st(observe.SynSent)}, Server: observe.Side{Addr: ap("10.0.0.2:18080")}},
	}
	rd := []nfq.Redirect{{Listen: ap("10.0.0.2:18080"), Upstream: ap("10.0.0.2:8080")}}
	got := joinRedirected(conns, rd)
	if len(got) != 3 {
		t.Fatalf("%d connections, want 3: %+v", len(got), got)
	}
	if got[0].Server.Addr != ap("10.0.0.2:8080") || len(got[0].Client.States) != 1 || got[0].Client.States[0].State != observe.TimeWait {
		t.Errorf("joined connection: %+v, want the client's TIME_WAIT on the upstream's connection", got[0])
	}
	if got[2].Client.Addr != ap("10.0.0.1:40002") || got[2].Server.Addr != ap("10.0.0.2:18080") {
		t.Errorf("a client end with no upstream connection: %+v, want it as it was", got[2])
	}
}
