package rules

import (
	"fmt"
	"sort"
	"sync"
)

// Action decides the fate of a segment that matched a rule. An action's exported fields,
// tagged `toml:"..."`, are its parameters: they are read from the rule's own table.
//
// Apply is called with the engine's lock held; it must not block. It decides through
// the Context: pass, drop, delay, hold, ...
type Action interface {
	Apply(c *Context)
}

// Validator is implemented by actions whose parameters need checking after decoding.
// The error names the offending parameter; the loader adds the position.
type Validator interface {
	Validate() error
}

// NeedsData is implemented by actions that must see segments other than SYN, FIN and RST
// of the connection, whatever the rule's flags say (for example merge, which waits for a FIN
// but holds a pure ACK).
type NeedsData interface {
	NeedsData() bool
}

var (
	registryMu sync.RWMutex
	registry   = map[string]func() Action{}
)

// Register makes an action available under name. It panics on a duplicate name, as
// registration happens in init functions.
func Register(name string, newAction func() Action) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("rules: action %q registered twice", name))
	}
	registry[name] = newAction
}

// NewAction returns a fresh, zero-parameter instance of the named action.
func NewAction(name string) (Action, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[name]
	if !ok {
		return nil, false
	}
	return f(), true
}

// Actions lists the registered action names, sorted.
func Actions() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
