package config

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/rules"
)

func TestLabGood(t *testing.T) {
	tests := []struct {
		file string
		want *Lab
	}{
		{
			file: "lab.toml",
			want: &Lab{
				Server:         []string{"{finproxy}", "app", "server", "--listen", "[{server_addr}]:{port}", "--mode", "echo close"},
				Client:         []string{"socat", "-", "TCP6:[{server_addr}]:{port},bind=[{client_addr}]"},
				Ready:          "listening on",
				Family:         FamilyIPv6,
				Timeout:        30 * time.Second,
				Settle:         1500 * time.Millisecond,
				ServerLifetime: ServerPerRun,
				StopGrace:      DefaultStopGrace,
				Sysctls: map[string]map[string]string{
					"client": {"net.ipv4.tcp_max_tw_buckets": "0", "net.ipv4.tcp_fin_timeout": "5"},
					"router": {"net/ipv4/conf/all/rp_filter": "0"},
					"server": {"net.ipv4.tcp_fin_timeout": "3"},
				},
				Pos: rules.Position{Line: 6, Col: 1},
			},
		},
		{
			file: "lab-minimal.toml",
			want: &Lab{
				Server:         []string{"{finproxy}", "app", "server", "--listen", "{server_addr}:{port}"},
				Client:         []string{"{finproxy}", "app", "client", "--connect", "{server_addr}:{port}"},
				Ready:          DefaultReady,
				Family:         FamilyIPv4,
				Timeout:        DefaultLabTimeout,
				Settle:         DefaultLabSettle,
				ServerLifetime: ServerPerRun,
				StopGrace:      DefaultStopGrace,
				Pos:            rules.Position{Line: 5, Col: 1},
			},
		},
		{file: "minimal.toml"}, // no [lab]: nil
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "good", tt.file)
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil {
				tt.want.Pos.File = path
			}
			if !reflect.DeepEqual(cfg.Lab, tt.want) {
				t.Errorf("lab = %+v\nwant %+v", cfg.Lab, tt.want)
			}
		})
	}
}

func TestLabParse(t *testing.T) {
	const head = "target.port = 1\n[lab]\n" // [lab] at line 2
	const cmds = "server = 's'\nclient = 'c'\n"
	tests := []struct {
		name    string
		src     string
		wantErr string
		check   func(t *testing.T, l *Lab)
	}{
		{
			name: "inline table",
			src:  "target.port = 1\nlab = { server = ['a', 'b c'], client = 'x \"y z\"', sysctl = { server = { 'net.core.somaxconn' = 16 } } }",
			check: func(t *testing.T, l *Lab) {
				if !reflect.DeepEqual(l.Server, []string{"a", "b c"}) || !reflect.DeepEqual(l.Client, []string{"x", "y z"}) ||
					l.Sysctls["server"]["net.core.somaxconn"] != "16" || l.Pos.Line != 2 {
					t.Errorf("lab = %+v", l)
				}
			},
		},
		{
			name: "placeholders everywhere, other braces kept",
			src:  head + "server = ['{finproxy}', '--x={server_addr}{client_addr}{port}']\nclient = ['awk', '{ print }', '{}', '{1x}']",
			check: func(t *testing.T, l *Lab) {
				if got := l.Client[1:]; !reflect.DeepEqual(got, []string{"{ print }", "{}", "{1x}"}) {
					t.Errorf("client = %q", got)
				}
			},
		},
		{
			name: "empty role table",
			src:  head + cmds + "[lab.sysctl.router]\n",
			check: func(t *testing.T, l *Lab) {
				if l.Sysctls != nil {
					t.Errorf("sysctls = %v", l.Sysctls)
				}
			},
		},
		{
			name:    "lab not a table",
			src:     "target.port = 1\nlab = 'socat'",
			wantErr: "t.toml:2:7: lab: must be a table, not a string (\"socat\")",
		},
		{
			name:    "missing both commands",
			src:     head,
			wantErr: "t.toml:2:1: lab: missing server (the server program's command, such as \"{finproxy} app server --listen {server_addr}:{port}\")\nt.toml:2:1: lab: missing client (the client program's command, such as [\"socat\", \"-\", \"TCP:{server_addr}:{port}\"])",
		},
		{
			name:    "command types",
			src:     head + "server = 5\nclient = []",
			wantErr: "t.toml:3:10: lab.server: must be a string or an array of strings (argv), not an integer (5)\nt.toml:4:10: lab.client: empty command",
		},
		{
			name:    "blank command and empty program",
			src:     head + "server = '  '\nclient = ['', 'x']",
			wantErr: "t.toml:3:10: lab.server: empty command\nt.toml:4:11: lab.client[1]: empty program name",
		},
		{
			name:    "placeholder in a bad argv is still checked",
			src:     head + "server = 's'\nclient = [1, '{nope}']",
			wantErr: "t.toml:4:11: lab.client[1]: must be a string, not an integer (1)\nt.toml:4:14: lab.client[2]: unknown placeholder {nope} (known: {server_addr}, {client_addr}, {port}, {finproxy})",
		},
		{
			name:    "durations",
			src:     head + cmds + "timeout = '0s'\nsettle = 'soon'",
			wantErr: "t.toml:5:11: lab.timeout: must be more than 0 (leave it out for 20s)\nt.toml:6:10: lab.settle: invalid duration \"soon\" (write it like \"250ms\" or \"2s\")",
		},
		{
			name:    "settle zero",
			src:     head + cmds + "settle = '0s'",
			wantErr: "t.toml:5:10: lab.settle: must be more than 0: a retransmission timer needs time to fire (leave it out for 800ms)",
		},
		{
			name:    "timeout below the default settle",
			src:     head + cmds + "timeout = '500ms'",
			wantErr: "t.toml:5:11: lab.timeout: settle (800ms) must be shorter than timeout (500ms): every run would time out",
		},
		{
			name:    "sysctl shapes",
			src:     head + cmds + "sysctl = { client = 1, server = { 'net.x' = true } }\n",
			wantErr: "t.toml:5:21: lab.sysctl.client: must be a table of sysctls, such as \"net.ipv4.tcp_fin_timeout\" = 3, not an integer (1)\nt.toml:5:45: lab.sysctl.server.\"net.x\": must be a string or an integer, not a boolean (true)",
		},
		{
			name:    "sysctl not a table",
			src:     head + cmds + "sysctl = 'net.x=1'\n",
			wantErr: "t.toml:5:10: lab.sysctl: must be a table (role -> sysctl key -> value), not a string (\"net.x=1\")",
		},
		{
			name:    "sysctl set twice",
			src:     head + cmds + "[lab.sysctl.server]\n'net.ipv4.a' = 1\nnet.ipv4.a = 2\n",
			wantErr: "t.toml:7:10: lab.sysctl.server.net.ipv4.a: sysctl net.ipv4.a is set twice (also at line 6)",
		},
		{
			name:    "sysctl key forms",
			src:     head + cmds + "[lab.sysctl.server]\n'net' = 1\n'net..x' = 1\n'netfilter.x' = 1\n'kernel.x' = 1\n",
			wantErr: "t.toml:6:1: lab.sysctl.server.net: only net.* keys can be set (they belong to the lab's namespace; others would change the host)\nt.toml:7:1: lab.sysctl.server.\"net..x\": only net.* keys can be set (they belong to the lab's namespace; others would change the host)\nt.toml:8:1: lab.sysctl.server.\"netfilter.x\": only net.* keys can be set (they belong to the lab's namespace; others would change the host)\nt.toml:9:1: lab.sysctl.server.\"kernel.x\": only net.* keys can be set (they belong to the lab's namespace; others would change the host)",
		},
		{
			name:    "unknown role without suggestion",
			src:     head + cmds + "[lab.sysctl.host]\n",
			wantErr: "t.toml:5:1: lab.sysctl.host: unknown role \"host\" (want client, router or server)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.src), "t.toml")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if cfg.Lab == nil {
					t.Fatal("no lab")
				}
				if tt.check != nil {
					tt.check(t, cfg.Lab)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse = %+v, want error %s", cfg, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("Parse error:\n%s\nwant:\n%s", err, tt.wantErr)
			}
		})
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"", nil, ""},
		{"  \t\n", nil, ""},
		{"a b\tc\nd", []string{"a", "b", "c", "d"}, ""},
		{"  a   b  ", []string{"a", "b"}, ""},
		{`'a b' "c d" e\ f`, []string{"a b", "c d", "e f"}, ""},
		{`'it''s' "x"'y'z`, []string{"its", "xyz"}, ""},
		{`''`, []string{""}, ""},
		{`a "" b`, []string{"a", "", "b"}, ""},
		{`'\n "$x"'`, []string{`\n "$x"`}, ""},
		{`"a \" \\ \$ \` + "`" + ` \n"`, []string{`a " \ $ ` + "` \\n"}, ""},
		{"\"a\\\nb\"", []string{"ab"}, ""},
		{"a\\\nb", []string{"ab"}, ""},
		{`"|;&<>()$"`, []string{"|;&<>()$"}, ""},
		{`\|`, []string{"|"}, ""},
		{"{finproxy} app --listen {server_addr}:{port}", []string{"{finproxy}", "app", "--listen", "{server_addr}:{port}"}, ""},
		{"'unterminated", nil, "unterminated ' quote"},
		{`"unterminated`, nil, `unterminated " quote`},
		{`"unterminated\"`, nil, `unterminated " quote`},
		{`a \`, nil, `trailing \ escapes nothing`},
		{"a > log", nil, `'>' needs a shell, and finproxy runs the command without one: quote it, or write ["sh", "-c", "..."]`},
		{"a && b", nil, `'&' needs a shell`},
		{"echo $HOME", nil, `'$' needs a shell`},
		{"a;b", nil, `';' needs a shell`},
	}
	for _, tt := range tests {
		got, err := SplitCommand(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("SplitCommand(%q) = %q, %v; want error %s", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// A command's overrides replace what they give and keep the rest; the lifetime and the
// stop grace fall back to their defaults when neither gives one.
func TestLabWith(t *testing.T) {
	l := Lab{Server: []string{"srv"}, Client: []string{"cli"}, Ready: "ready", StopGrace: 2 * time.Second}
	got := l.With(LabOverrides{})
	if !slices.Equal(got.Server, l.Server) || !slices.Equal(got.Client, l.Client) || got.Ready != "ready" ||
		got.StopGrace != 2*time.Second || got.ServerLifetime != DefaultLabLifetime {
		t.Errorf("no overrides: %+v", got)
	}
	got = l.With(LabOverrides{Server: []string{"redis-server"}, Ready: "Ready to accept", ServerLifetime: ServerPerLab, StopGrace: time.Second})
	if !slices.Equal(got.Server, []string{"redis-server"}) || !slices.Equal(got.Client, l.Client) || got.Ready != "Ready to accept" ||
		got.ServerLifetime != ServerPerLab || got.StopGrace != time.Second {
		t.Errorf("overrides: %+v", got)
	}
	if got := (Lab{}).With(LabOverrides{}); got.StopGrace != DefaultStopGrace || got.ServerLifetime != DefaultLabLifetime {
		t.Errorf("defaults: %+v", got)
	}
	if l.Server[0] != "srv" || l.ServerLifetime != "" {
		t.Errorf("With changed the lab it was called on: %+v", l)
	}
}
