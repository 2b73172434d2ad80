package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/finproxy/finproxy/config"
	"github.com/finproxy/finproxy/configs"
)

// stdinArg is the -c value that reads the config from stdin; stdinName names it in
// positions and messages.
const (
	stdinArg  = "-"
	stdinName = "<stdin>"
)

// configUsage documents -c for the commands that take a config.
const configUsage = "scenario config: a TOML file, the name of a built-in preset such as lost-fin, or - to read it from stdin"

// loadConfig reads -c: a file path, the name of a built-in preset ("lost-fin"), or - for
// stdin (in). It returns as soon as ctx ends (Ctrl-C, SIGTERM), whatever the reading waits
// for: a stdin that never ends is left to the goroutine reading it, which the process's
// exit ends.
func loadConfig(ctx context.Context, arg string, in io.Reader) (*config.Config, error) {
	type result struct {
		cfg *config.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := readConfig(arg, in)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("config %s: not loaded: %w", configName(arg), context.Cause(ctx))
	}
}

func readConfig(arg string, in io.Reader) (*config.Config, error) {
	if arg == stdinArg {
		data, err := config.Read(in, stdinName)
		if err != nil {
			return nil, err
		}
		return config.Parse(data, stdinName)
	}
	if _, err := os.Stat(arg); err == nil {
		return config.Load(arg)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config %s: %w", arg, err)
	}
	if !strings.ContainsRune(arg, os.PathSeparator) {
		if data, path, ok := configs.Read(arg); ok {
			return config.Parse(data, path)
		}
	}
	return nil, fmt.Errorf("config %s: no such file, and no built-in preset of that name (presets: %s)",
		arg, strings.Join(configs.Names(), ", "))
}

// configName names -c's value in messages.
func configName(arg string) string {
	if arg == stdinArg {
		return stdinName
	}
	return arg
}
