package control

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/control/client"
)

func TestCheckNesting(t *testing.T) {
	deep := func(n int, open, close string) string {
		return "[target]\nport = 1\nx = " + strings.Repeat(open, n) + strings.Repeat(close, n) + "\n"
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"rule set", dropFIN, ""},
		{"arrays at the limit", deep(MaxNesting, "[", "]"), ""},
		{"arrays past it", deep(MaxNesting+1, "[", "]"), "request:3:" + "37: arrays and inline tables nest deeper than 32"},
		{"inline tables", deep(100, "{a=", "}"), "request:3:"},
		{"brackets in strings", "a = \"" + strings.Repeat("[", 100) + "\"\nb = '" + strings.Repeat("{", 100) + "'\n", ""},
		{"brackets in multi-line strings", "a = \"\"\"\n" + strings.Repeat("[", 100) + "\n\"\"\"\nb = '''" + strings.Repeat("[", 100) + "'''\n", ""},
		{"escaped quote", `a = "\"` + strings.Repeat("[", 100) + `"` + "\n", ""},
		{"brackets in comments", "# " + strings.Repeat("[", 100) + "\n", ""},
		{"after a string", "a = \"x\"\nb = " + strings.Repeat("[", 40), "request:2:"},
	} {
		err := checkNesting([]byte(tc.body), "request")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q...", tc.name, err, tc.want)
		}
	}
}

// A deeply nested body is refused before the config loader sees it.
func TestAPIRefusesDeepNesting(t *testing.T) {
	r := newRig(t, "")
	body := "[target]\nport = 8080\nx = " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n"
	_, err := r.c.Replace(context.Background(), []byte(body))
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, "nest deeper than 32") {
		t.Fatalf("deep body: %v", err)
	}
	if len(ae.Problems) != 1 || ae.Problems[0].Line != 3 || ae.Problems[0].Col != 37 {
		t.Errorf("problems %+v, want one at 3:37", ae.Problems)
	}
}
