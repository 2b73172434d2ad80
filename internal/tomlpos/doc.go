// Package tomlpos finds where things are written in a TOML source, which the TOML parser
// keeps to itself: Locate scans a source once and answers where each key path (Path, such
// as rule[2].delay) and its value start (LineCol), and where the source first nests deeper
// than MaxDepth. Suggest and EditDistance give the "did you mean" of a misspelt key.
//
// It knows nothing of finproxy's schema: package config uses it to put file:line:col on
// every error of a scenario file.
package tomlpos
