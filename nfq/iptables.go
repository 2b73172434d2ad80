package nfq

import (
	"fmt"
	"os/exec"

	"github.com/coreos/go-iptables/iptables"
)

// IPTables is the subset of *github.com/coreos/go-iptables/iptables.IPTables
// the hooks use. NewIPTables gives the real one, NewFake an in-memory one.
type IPTables interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	ListChains(table string) ([]string, error)
	List(table, chain string) ([]string, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	DeleteIfExists(table, chain string, rulespec ...string) error
}

var _ IPTables = (*iptables.IPTables)(nil)

// lockWaitSeconds bounds the wait for the xtables lock (legacy backend only).
const lockWaitSeconds = 10

// NewIPTables returns the iptables (v6=false) or ip6tables (v6=true) of this
// host, run as programs by go-iptables. The commands act on the network
// namespace of the calling thread.
func NewIPTables(v6 bool) (IPTables, error) {
	name, proto := "iptables", iptables.ProtocolIPv4
	if v6 {
		name, proto = "ip6tables", iptables.ProtocolIPv6
	}
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("nfq: %s not found on PATH: install the iptables package (for example `apt-get install iptables`): %w", name, err)
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(lockWaitSeconds))
	if err != nil {
		return nil, fmt.Errorf("nfq: set up %s: %w", name, err)
	}
	return ipt, nil
}
