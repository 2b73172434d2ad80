package scenario

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/finproxy/finproxy/lab"
)

// The placeholders of a lab command take the run's values, of the lab's family; other
// braces stay as written; the config's argv is not changed.
func TestExpand(t *testing.T) {
	topo := &lab.Topology{
		ClientAddr: netip.MustParseAddr("198.18.1.2"), ServerAddr: netip.MustParseAddr("198.18.2.2"),
		ClientAddr6: netip.MustParseAddr("fd00:f1:1::2"), ServerAddr6: netip.MustParseAddr("fd00:f1:2::2"),
	}
	for _, tc := range []struct {
		in, want string
		v6       bool
	}{
		{"{finproxy}", "/usr/bin/finproxy", false},
		{"[{server_addr}]:{port}", "[fd00:f1:2::2]:8080", true},
		{"{server_addr}:{port}", "198.18.2.2:8080", false},
		{"bind={client_addr}:0", "bind=198.18.1.2:0", false},
		{"bind=[{client_addr}]:0", "bind=[fd00:f1:1::2]:0", true},
		{"{port}{port}", "80808080", false},
		{"{other} {} { port } {{port}", "{other} {} { port } {8080", false},
		{"plain", "plain", false},
	} {
		if got := expand([]string{tc.in}, topo, 8080, "/usr/bin/finproxy", tc.v6); len(got) != 1 || got[0] != tc.want {
			t.Errorf("expand(%q, v6 %v) = %q, want %q", tc.in, tc.v6, got, tc.want)
		}
	}
	server := []string{"{finproxy}", "app", "--listen", "{server_addr}:{port}"}
	if got, want := expand(server, topo, 8080, "/usr/bin/finproxy", true), []string{"/usr/bin/finproxy", "app", "--listen", "fd00:f1:2::2:8080"}; !reflect.DeepEqual(got, want) {
		t.Errorf("server argv = %q, want %q", got, want)
	}
	if got, want := expand([]string{"c", "{client_addr}"}, topo, 8080, "", false), []string{"c", "198.18.1.2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("client argv = %q, want %q", got, want)
	}
	if server[0] != "{finproxy}" {
		t.Errorf("expand changed the config: %q", server)
	}
}
