package rules

func init() { Register("pass", func() Action { return &PassAction{} }) }

// PassAction accepts the segment: a rule with it counts and logs the segments it matches
// (and, as rules are tried in order, shields them from the rules after it).
//
//	action = "pass"
type PassAction struct{}

// Apply accepts the segment.
func (*PassAction) Apply(c *Context) { c.Pass() }
