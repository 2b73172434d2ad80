package main

import (
	"errors"
	"fmt"
	"os"
)

// checkOutputFiles checks, before anything runs, that each output file (a flag's name and
// its path; an empty path is skipped) can be written: it opens it for writing, creating
// it when missing (an existing file keeps its content until the command writes it). A
// run whose --log or --report cannot be written fails at once, naming the flag, rather
// than after the whole run.
func checkOutputFiles(files ...[2]string) error {
	for _, fp := range files {
		flag, path := fp[0], fp[1]
		if path == "" {
			continue
		}
		if st, err := os.Stat(path); err == nil && st.IsDir() {
			return fmt.Errorf("%s %s: is a directory, want a file", flag, path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("%s %s: cannot write it: %w", flag, path, unwrapPath(err))
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s %s: %w", flag, path, unwrapPath(err))
		}
	}
	return nil
}

// checkOutputDir creates dir (and its parents) when missing and checks that files can be
// created in it.
func checkOutputDir(flag, dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s %s: cannot create the directory: %w", flag, dir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".finproxy-check-*")
	if err != nil {
		return fmt.Errorf("%s %s: cannot write in it: %w", flag, dir, unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

// unwrapPath drops the PathError's repetition of the path the message already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// workDir is where a command that runs labs keeps its runs' files: dir when the user
// named one (created), else a temporary directory that done removes.
func workDir(dir, prefix string) (path string, done func(), err error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}
