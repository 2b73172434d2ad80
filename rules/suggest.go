package rules

// Suggest returns the name of known closest to name when it is close enough to be a typo
// of it (the "did you mean" of config errors), or "".
func Suggest(name string, known []string) string { return suggest(name, known) }
