package nfq

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Fake is an in-memory IPTables for tests, here and in other packages. It keeps
// rules as the rulespec strings it was given and lists them the way `iptables -S`
// does ("-P OUTPUT ACCEPT", "-N CHAIN", "-A CHAIN rulespec"), so List output
// parsed back into a rulespec finds the rule again (Exists, DeleteIfExists).
//
// It copies the behaviour of iptables 1.8.9 (nf_tables) that finproxy depends on,
// as measured: NewChain of an existing chain fails; Exists on a missing chain is
// false, not an error; a jump to a missing chain fails; Insert past the end + 1
// fails; ClearAndDeleteChain of a missing chain succeeds, of a chain still jumped
// to flushes it and then fails ("Device or resource busy").
//
// Rules are compared as text, not by meaning: "-d 10.0.0.1" and
// "-d 10.0.0.1/32" are different rules here while iptables treats them alike.
type Fake struct {
	mu     sync.Mutex
	tables map[string]*fakeTable
	// FailOn, when set, is called at the start of every method with the method
	// name ("NewChain", "Insert", ...) and its arguments; an error it returns is
	// returned by the method, which then changes nothing.
	FailOn func(op, table, chain string, rulespec []string) error
}

type fakeTable struct {
	builtin []string
	chains  map[string][]string // chain -> rendered rulespecs
}

var fakeBuiltins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

// Targets that are not chains but extensions, accepted by -j without a chain.
var fakeTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "QUEUE": true, "NFQUEUE": true,
	"CONNMARK": true, "MARK": true, "LOG": true, "REJECT": true, "TCPMSS": true,
	"DNAT": true, "SNAT": true, "MASQUERADE": true, "REDIRECT": true, "TPROXY": true,
	"CT": true, "NOTRACK": true, "TRACE": true, "NFLOG": true,
}

var _ IPTables = (*Fake)(nil)

// FakeError is the error a Fake returns; NotExist is set where iptables says the
// chain or rule does not exist.
type FakeError struct {
	Cmd      string
	Msg      string
	NotExist bool
}

func (e *FakeError) Error() string { return "fake iptables " + e.Cmd + ": " + e.Msg }

// NewFake returns a Fake holding the empty built-in chains of the filter,
// mangle, nat and raw tables.
func NewFake() *Fake {
	f := &Fake{tables: map[string]*fakeTable{}}
	for t, b := range fakeBuiltins {
		ft := &fakeTable{builtin: b, chains: map[string][]string{}}
		for _, c := range b {
			ft.chains[c] = nil
		}
		f.tables[t] = ft
	}
	return f
}

func (f *Fake) begin(op, table, chain string, spec []string) (*fakeTable, error) {
	if f.FailOn != nil {
		if err := f.FailOn(op, table, chain, spec); err != nil {
			return nil, err
		}
	}
	t, ok := f.tables[table]
	if !ok {
		return nil, &FakeError{Cmd: op, Msg: fmt.Sprintf("table %q does not exist", table), NotExist: true}
	}
	return t, nil
}

func (t *fakeTable) isBuiltin(chain string) bool { return slices.Contains(t.builtin, chain) }

// referenced reports whether any rule jumps (or goes) to chain.
func (t *fakeTable) referenced(chain string) bool {
	for _, rules := range t.chains {
		for _, r := range rules {
			if spec, err := splitQuoted(r); err == nil && ruleTarget(spec) == chain {
				return true
			}
		}
	}
	return false
}

func (t *fakeTable) checkRule(op string, spec []string) (string, error) {
	if len(spec) == 0 {
		return "", &FakeError{Cmd: op, Msg: "empty rulespec"}
	}
	if target := ruleTarget(spec); target != "" && !fakeTargets[target] {
		if _, ok := t.chains[target]; !ok {
			return "", &FakeError{Cmd: op, Msg: fmt.Sprintf("Chain '%s' does not exist", target), NotExist: true}
		}
	}
	return renderSpec(spec), nil
}

// ChainExists reports whether table holds chain.
func (f *Fake) ChainExists(table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("ChainExists", table, chain, nil)
	if err != nil {
		return false, err
	}
	_, ok := t.chains[chain]
	return ok, nil
}

// NewChain creates an empty chain; it fails if the chain exists.
func (f *Fake) NewChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("NewChain", table, chain, nil)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; ok {
		return &FakeError{Cmd: "NewChain", Msg: "Chain already exists."}
	}
	if chain == "" || len(chain) > 28 || strings.ContainsAny(chain, " \t") {
		return &FakeError{Cmd: "NewChain", Msg: fmt.Sprintf("invalid chain name %q", chain)}
	}
	t.chains[chain] = nil
	return nil
}

// ClearChain flushes a chain; like go-iptables, it creates a missing one.
func (f *Fake) ClearChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("ClearChain", table, chain, nil)
	if err != nil {
		return err
	}
	t.chains[chain] = nil
	return nil
}

// ClearAndDeleteChain flushes and deletes a user chain; a missing chain is no error.
func (f *Fake) ClearAndDeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("ClearAndDeleteChain", table, chain, nil)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; !ok {
		return nil
	}
	if t.isBuiltin(chain) {
		return &FakeError{Cmd: "ClearAndDeleteChain", Msg: fmt.Sprintf("cannot delete built-in chain %s", chain)}
	}
	t.chains[chain] = nil // iptables -F succeeds even when -X then fails
	if t.referenced(chain) {
		return &FakeError{Cmd: "ClearAndDeleteChain", Msg: fmt.Sprintf("CHAIN_DEL failed (Device or resource busy): chain %s", chain)}
	}
	delete(t.chains, chain)
	return nil
}

func (t *fakeTable) userChains() []string {
	var user []string
	for c := range t.chains {
		if !t.isBuiltin(c) {
			user = append(user, c)
		}
	}
	sort.Strings(user)
	return user
}

// ListChains lists the built-in chains, then the user chains sorted by name.
func (f *Fake) ListChains(table string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("ListChains", table, "", nil)
	if err != nil {
		return nil, err
	}
	return append(slices.Clone(t.builtin), t.userChains()...), nil
}

// List prints chain as `iptables -S chain` does.
func (f *Fake) List(table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("List", table, chain, nil)
	if err != nil {
		return nil, err
	}
	rules, ok := t.chains[chain]
	if !ok {
		return nil, &FakeError{Cmd: "List", Msg: fmt.Sprintf("chain `%s' in table `%s' does not exist", chain, table), NotExist: true}
	}
	var out []string
	if t.isBuiltin(chain) {
		out = append(out, "-P "+chain+" ACCEPT")
	} else {
		out = append(out, "-N "+chain)
	}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, nil
}

// Insert puts a rule at position pos (1 = first).
func (f *Fake) Insert(table, chain string, pos int, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("Insert", table, chain, rulespec)
	if err != nil {
		return err
	}
	rules, ok := t.chains[chain]
	if !ok {
		return &FakeError{Cmd: "Insert", Msg: fmt.Sprintf("Chain '%s' does not exist", chain), NotExist: true}
	}
	if pos < 1 || pos > len(rules)+1 {
		return &FakeError{Cmd: "Insert", Msg: "Index of insertion too big."}
	}
	r, err := t.checkRule("Insert", rulespec)
	if err != nil {
		return err
	}
	t.chains[chain] = slices.Insert(rules, pos-1, r)
	return nil
}

// Append adds a rule at the end of chain.
func (f *Fake) Append(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("Append", table, chain, rulespec)
	if err != nil {
		return err
	}
	rules, ok := t.chains[chain]
	if !ok {
		return &FakeError{Cmd: "Append", Msg: fmt.Sprintf("Chain '%s' does not exist", chain), NotExist: true}
	}
	r, err := t.checkRule("Append", rulespec)
	if err != nil {
		return err
	}
	t.chains[chain] = append(rules, r)
	return nil
}

// Exists reports whether chain holds the rule; a missing chain holds none.
func (f *Fake) Exists(table, chain string, rulespec ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("Exists", table, chain, rulespec)
	if err != nil {
		return false, err
	}
	return slices.Contains(t.chains[chain], renderSpec(rulespec)), nil
}

// DeleteIfExists deletes the first copy of the rule in chain, if there is one.
func (f *Fake) DeleteIfExists(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.begin("DeleteIfExists", table, chain, rulespec)
	if err != nil {
		return err
	}
	rules := t.chains[chain]
	if i := slices.Index(rules, renderSpec(rulespec)); i >= 0 {
		t.chains[chain] = slices.Delete(rules, i, i+1)
	}
	return nil
}

// Rules returns the whole state as iptables commands that would rebuild it:
// "-t TABLE -N CHAIN" for each user chain and "-t TABLE -A CHAIN rulespec" for
// each rule, tables by name, built-in chains first. A fresh Fake returns nil.
func (f *Fake) Rules() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.tables))
	for n := range f.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		t := f.tables[n]
		user := t.userChains()
		for _, c := range user {
			out = append(out, "-t "+n+" -N "+c)
		}
		for _, c := range append(slices.Clone(t.builtin), user...) {
			for _, r := range t.chains[c] {
				out = append(out, "-t "+n+" -A "+c+" "+r)
			}
		}
	}
	return out
}
