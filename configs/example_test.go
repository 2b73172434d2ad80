package configs_test

import (
	"fmt"
	"strings"

	"github.com/finproxy/finproxy/configs"
)

// The presets are embedded in the binary: `finproxy run -c lost-fin` finds them by name.
func ExampleRead() {
	data, path, ok := configs.Read("lost-fin")
	fmt.Println(path, ok, strings.Contains(string(data), `action = "drop"`))
	_, _, ok = configs.Read("no-such-preset")
	fmt.Println(ok)
	// Output:
	// configs/lost-fin.toml true true
	// false
}
