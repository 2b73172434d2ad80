package configs

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.toml
var files embed.FS

// Names lists the presets, without the .toml suffix, sorted.
func Names() []string {
	entries, _ := fs.ReadDir(files, ".")
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".toml") {
			names = append(names, strings.TrimSuffix(e.Name(), ".toml"))
		}
	}
	sort.Strings(names)
	return names
}

// Read returns the preset's TOML and the path it has in the source tree (for messages).
func Read(name string) (data []byte, path string, ok bool) {
	name = strings.TrimSuffix(name, ".toml")
	data, err := files.ReadFile(name + ".toml")
	if err != nil {
		return nil, "", false
	}
	return data, "configs/" + name + ".toml", true
}
