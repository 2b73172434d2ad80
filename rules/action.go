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

// Registry maps action names to their constructors. The engine's actions register in
// DefaultRegistry (Register, in init functions); a test that needs actions of its own
// registers them in a Clone, and parses with it (config.ParseWith), so that what everyone
// else sees, the list of actions in config errors included, stays the real one.
type Registry struct {
	mu sync.RWMutex
	m  map[string]func() Action
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]func() Action{}} }

var defaultRegistry = NewRegistry()

// DefaultRegistry is the registry of the engine's actions, which config.Parse and
// config.Load use.
func DefaultRegistry() *Registry { return defaultRegistry }

// Register makes an action available under name. It panics on a duplicate name, as
// registration happens in init functions.
func (r *Registry) Register(name string, newAction func() Action) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		panic(fmt.Sprintf("rules: action %q registered twice", name))
	}
	r.m[name] = newAction
}

// New returns a fresh, zero-parameter instance of the named action.
func (r *Registry) New(name string) (Action, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.m[name]
	if !ok {
		return nil, false
	}
	return f(), true
}

// Names lists the registered action names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.m))
	for n := range r.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Clone returns a registry with the same actions, to add others to.
func (r *Registry) Clone() *Registry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := NewRegistry()
	for n, f := range r.m {
		c.m[n] = f
	}
	return c
}

// Register makes an action available in DefaultRegistry.
func Register(name string, newAction func() Action) { defaultRegistry.Register(name, newAction) }

// NewAction returns a fresh instance of an action of DefaultRegistry.
func NewAction(name string) (Action, bool) { return defaultRegistry.New(name) }

// Actions lists the actions of DefaultRegistry, sorted.
func Actions() []string { return defaultRegistry.Names() }
