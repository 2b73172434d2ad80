// Package deps holds no code: its test enforces the direction of dependencies between
// finproxy's packages (cmd → everything; rules knows nothing of netlink; nfq knows nothing
// of TOML or rules), as tailscale's depaware checks do.
package deps
