package rules

func init() { Register("drop", func() Action { return &DropAction{} }) }

// DropAction drops the segment, as a lossy network would: its sender retransmits it.
//
//	action = "drop"
type DropAction struct{}

// Apply drops the segment.
func (*DropAction) Apply(c *Context) { c.Drop() }
