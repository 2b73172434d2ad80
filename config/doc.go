// Package config owns the scenario file: Load, Read and Parse, the schema of its sections
// ([target] and [[rule]], which make the engine's rules.Config; [lab], the applications a
// lab runs the scenario against; [expect], what the run must show) and the errors that
// name file:line:col and the key's path, with a "did you mean" for a misspelt key.
//
// A config is checked whole before anything runs: every problem of a file is reported at
// once (ConfigErrors), sorted by position. The actions' parameters are decoded into the
// actions registered with rules (a rules.Registry), so a new action needs no change here.
//
// Dependencies point one way: config imports rules for the rule model and the action
// registry; rules knows nothing of files, labs or expectations.
package config
