package rules

// Context is handed to Action.Apply: the segment, its connection and rule, and the
// engine's ways to decide its fate. (Owned by engine.go; fields and methods live there.)
type Context struct {
	Packet *Packet
	Rule   *Rule
}
