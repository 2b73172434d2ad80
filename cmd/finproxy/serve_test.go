package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Only loopback (and unix sockets) listen without a token; anything else needs both
// --allow-remote and --token-file, and each refusal names the flag to give.
func TestServeFlagsCheck(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tc := range []struct {
		f         serveFlags
		token     string
		wantError string
	}{
		{f: serveFlags{listen: "127.0.0.1:8474"}},
		{f: serveFlags{listen: "[::1]:8474"}},
		{f: serveFlags{listen: "localhost:8474"}},
		{f: serveFlags{listen: "", unix: "/run/x.sock"}},
		{f: serveFlags{listen: "127.0.0.1:8474", tokenFile: tok}, token: "s3cret"},
		{f: serveFlags{listen: "0.0.0.0:8474"}, wantError: "--allow-remote and --token-file"},
		{f: serveFlags{listen: ":8474"}, wantError: "--allow-remote and --token-file"},
		{f: serveFlags{listen: "10.0.0.1:8474", allowRemote: true}, wantError: "--allow-remote needs --token-file"},
		{f: serveFlags{listen: "10.0.0.1:8474", tokenFile: tok}, wantError: "give --allow-remote"},
		{f: serveFlags{listen: "10.0.0.1:8474", allowRemote: true, tokenFile: tok}, token: "s3cret"},
		{f: serveFlags{listen: "127.0.0.1:8474", observe: true}, wantError: "--close-wait 0s"},
		{f: serveFlags{listen: "10.0.0.1:8474", allowRemote: true, tokenFile: empty}, wantError: "is empty"},
		{f: serveFlags{listen: "10.0.0.1:8474", allowRemote: true, tokenFile: filepath.Join(dir, "none")}, wantError: "--token-file"},
		{f: serveFlags{listen: "8474"}, wantError: "--listen \"8474\": want HOST:PORT"},
		{f: serveFlags{}, wantError: "needs --unix"},
	} {
		token, err := tc.f.check()
		switch {
		case tc.wantError == "" && err != nil:
			t.Errorf("%+v: %v", tc.f, err)
		case tc.wantError != "" && (err == nil || !strings.Contains(err.Error(), tc.wantError)):
			t.Errorf("%+v: error %v, want one with %q", tc.f, err, tc.wantError)
		case err == nil && token != tc.token:
			t.Errorf("%+v: token %q, want %q", tc.f, token, tc.token)
		}
	}
}
