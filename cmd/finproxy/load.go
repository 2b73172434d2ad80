package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/rules"
)

// loadConfig reads -c: a file path, or the name of a built-in preset ("lost-fin").
func loadConfig(arg string) (*rules.Config, error) {
	if _, err := os.Stat(arg); err == nil {
		return rules.Load(arg)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config %s: %w", arg, err)
	}
	if !strings.ContainsRune(arg, os.PathSeparator) {
		if data, path, ok := configs.Read(arg); ok {
			return rules.Parse(data, path)
		}
	}
	return nil, fmt.Errorf("config %s: no such file, and no built-in preset of that name (presets: %s)",
		arg, strings.Join(configs.Names(), ", "))
}
