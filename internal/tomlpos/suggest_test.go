package tomlpos

import "testing"

func TestSuggest(t *testing.T) {
	known := []string{"delay", "jitter", "name", "global_limit", "on_timeout", "rule"}
	for k, want := range map[string]string{
		"dealy": "delay", "Name": "name", "nme": "name", "globallimit": "global_limit",
		"on-timeout": "on_timeout", "rules": "rule", "jittr": "jitter",
		"x": "", "delayed_by": "", "timeout": "",
	} {
		if got := Suggest(k, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", k, got, want)
		}
	}
}
