package lab

import (
	"strings"
	"testing"
)

func TestParseNetstat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]int64
		err      string
	}{
		{name: "empty", in: "", want: map[string]int64{}},
		{name: "two tables",
			in:   "TcpExt: SyncookiesSent PAWSEstab\nTcpExt: 0 3\nIpExt: InNoRoutes\nIpExt: 7\n",
			want: map[string]int64{"TcpExtSyncookiesSent": 0, "TcpExtPAWSEstab": 3, "IpExtInNoRoutes": 7}},
		{name: "negative value (MaxConn in snmp)",
			in: "Tcp: RtoAlgorithm MaxConn\nTcp: 1 -1\n", want: map[string]int64{"TcpRtoAlgorithm": 1, "TcpMaxConn": -1}},
		{name: "odd lines", in: "TcpExt: A\n", err: "in pairs"},
		{name: "short value line", in: "TcpExt: A B\nTcpExt: 1\n", err: "line 2: 2 fields for TcpExt:"},
		{name: "prefix mismatch", in: "TcpExt: A\nIpExt: 1\n", err: "line 2"},
		{name: "not a header", in: "A B\n1 2\n", err: "line 1"},
		{name: "not a number", in: "Tcp: A\nTcp: x\n", err: "line 2: TcpA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNetstat([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

func FuzzParseNetstat(f *testing.F) {
	f.Add([]byte("TcpExt: SyncookiesSent PAWSEstab\nTcpExt: 0 3\n"))
	f.Add([]byte("Tcp: RtoAlgorithm MaxConn\nTcp: 1 -1\nUdp: InDatagrams\nUdp: 5\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseNetstat(data)
		if err == nil && m == nil {
			t.Fatal("nil map without an error")
		}
	})
}
