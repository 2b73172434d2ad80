package observe

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/golden"
)

// TestGolden parses the recorded lines of testdata/trace/*.txt and compares each result
// with the .golden file next to it.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/trace/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var out strings.Builder
			sc := bufio.NewScanner(in)
			for sc.Scan() {
				ev, err := ParseLine(sc.Text())
				var v any
				switch {
				case errors.Is(err, ErrNotEvent):
					v = map[string]string{"skip": "not an event"}
				case errors.Is(err, ErrUnknownEvent):
					v = map[string]string{"unknown": err.Error()}
				case err != nil:
					v = map[string]string{"error": err.Error()}
				default:
					v = ev
				}
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				out.Write(b)
				out.WriteByte('\n')
			}
			golden.Check(t, strings.TrimSuffix(f, ".txt")+".golden", []byte(out.String()))
		})
	}
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want Event
	}{
		{
			"set_state v4, comm with a space",
			`          my app-20867   [001] .....  1285.970996: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=36666 dport=9101 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_SYN_SENT newstate=TCP_ESTABLISHED`,
			StateChange{EventMeta: EventMeta{Mono: 1285*time.Second + 970996*time.Microsecond, Task: "my app-20867",
				Src: mustAP("127.0.0.1:36666"), Dst: mustAP("127.0.0.1:9101")},
				Old: SynSent, New: Established, Family: "AF_INET", Proto: "IPPROTO_TCP", Source: SourceTrace},
		},
		{
			// The IPv4 fields of an AF_INET6 socket are garbage (127.0.0.6 here): the
			// v6 fields are used, and v4-mapped addresses unmapped.
			"set_state v6 mapped",
			`         python3-7048    [001] ..s2.   387.055172: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=9012 dport=54596 saddr=127.0.0.6 daddr=127.0.0.6 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV`,
			StateChange{EventMeta: EventMeta{Mono: 387*time.Second + 55172*time.Microsecond, Task: "python3-7048",
				Src: mustAP("127.0.0.1:9012"), Dst: mustAP("127.0.0.1:54596")},
				Old: Listen, New: SynRecv, Family: "AF_INET6", Proto: "IPPROTO_TCP", Source: SourceTrace},
		},
		{
			"send_reset v6 brackets",
			`         python3-7048    [001] .....   387.055267: tcp_send_reset: skbaddr=0000000000000000 skaddr=0000000000c8e336 src=[::ffff:127.0.0.1]:9012 dest=[::ffff:127.0.0.1]:54596 state=TCP_CLOSE reason=TCP_STATE`,
			ResetSent{EventMeta: EventMeta{Mono: 387*time.Second + 55267*time.Microsecond, Task: "python3-7048",
				Src: mustAP("127.0.0.1:9012"), Dst: mustAP("127.0.0.1:54596")}, State: Close, Reason: "TCP_STATE"},
		},
		{
			"send_reset without socket",
			`         python3-7048    [001] ..s1.   387.054716: tcp_send_reset: skbaddr=00000000ddab8d61 skaddr=0000000000000000 src=127.0.0.1:9011 dest=127.0.0.1:37180 state=UNKNOWN reason=NO_SOCKET`,
			ResetSent{EventMeta: EventMeta{Mono: 387*time.Second + 54716*time.Microsecond, Task: "python3-7048",
				Src: mustAP("127.0.0.1:9011"), Dst: mustAP("127.0.0.1:37180")}, State: Unknown, Reason: "NO_SOCKET"},
		},
		{
			"receive_reset",
			`         python3-7048    [001] .....   387.054742: tcp_receive_reset: family=AF_INET sport=37180 dport=9011 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 sock_cookie=1f`,
			ResetReceived{EventMeta: EventMeta{Mono: 387*time.Second + 54742*time.Microsecond, Task: "python3-7048",
				Src: mustAP("127.0.0.1:37180"), Dst: mustAP("127.0.0.1:9011")}, Family: "AF_INET", Cookie: 0x1f},
		},
		{
			"retransmit",
			`          <idle>-0       [000] ..s2.   387.624192: tcp_retransmit_skb: skbaddr=000000008960880b skaddr=000000007d0663b1 family=AF_INET sport=9010 dport=40000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 state=TCP_LAST_ACK err=0`,
			Retransmit{EventMeta: EventMeta{Mono: 387*time.Second + 624192*time.Microsecond, Task: "<idle>-0",
				Src: mustAP("127.0.0.1:9010"), Dst: mustAP("127.0.0.1:40000")}, State: LastAck, Family: "AF_INET"},
		},
		{
			"marker",
			`            bash-20863   [001] ...1.  1292.490693: tracing_mark_write: finproxy-sync 1`,
			Marker{Mono: 1292*time.Second + 490693*time.Microsecond, Text: "finproxy-sync 1"},
		},
		{"lost", `CPU:1 [LOST 751 EVENTS]`, Lost{CPU: 1, Count: 751}},
		{
			"nanosecond timestamps, no flags column",
			`  x-1 [000] 5.000000001: tcp_receive_reset: family=AF_INET6 sport=1 dport=2 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=2001:db8::1 daddrv6=2001:db8::2 sock_cookie=0`,
			ResetReceived{EventMeta: EventMeta{Mono: 5*time.Second + 1, Task: "x-1",
				Src: mustAP("[2001:db8::1]:1"), Dst: mustAP("[2001:db8::2]:2")}, Family: "AF_INET6"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLineErrors(t *testing.T) {
	for _, line := range []string{"", "   ", "# tracer: nop"} {
		if _, err := ParseLine(line); !errors.Is(err, ErrNotEvent) {
			t.Errorf("%q: %v, want ErrNotEvent", line, err)
		}
	}
	var pe *ParseError
	_, err := ParseLine(`  a-1 [000] ..... 1.000001: tcp_probe: family=AF_INET`)
	if !errors.Is(err, ErrUnknownEvent) || !errors.As(err, &pe) {
		t.Errorf("unknown event: %v", err)
	}
	for _, line := range []string{
		"garbage",
		`  a-1 [000] ..... 1.000001: inet_sock_set_state: family=AF_INET`,
		`  a-1 [000] ..... 1.000001: tcp_send_reset: src=1.2.3.4:5 dest=nope state=UNKNOWN reason=NO_SOCKET`,
		`  a-1 [000] ..... 1.000001: tcp_retransmit_skb: family=AF_INET sport=1 dport=2 saddr=1.1.1.1 daddr=2.2.2.2 state=ESTABLISHED err=0`,
	} {
		if _, err := ParseLine(line); !errors.As(err, &pe) || errors.Is(err, ErrUnknownEvent) {
			t.Errorf("%q: %v, want a ParseError", line, err)
		}
	}
}

func TestStateText(t *testing.T) {
	for s := Unknown; s <= NewSynRecv; s++ {
		b, _ := s.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%v: round trip %v, %v", s, back, err)
		}
	}
	if s, err := ParseState("TCP_FIN_WAIT2"); err != nil || s != FinWait2 || s.String() != "FIN_WAIT2" {
		t.Errorf("ParseState: %v %v", s, err)
	}
	if _, err := ParseState("FIN_WAIT3"); err == nil {
		t.Error("FIN_WAIT3 parsed")
	}
}

func TestFilter(t *testing.T) {
	f := Filter{Ports: []uint16{8080, 443, 8080}, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if !f.Match(mustAP("10.1.2.3:50000"), mustAP("192.168.0.1:8080")) {
		t.Error("port and address should match")
	}
	if !f.Match(mustAP("[::ffff:10.1.2.3]:50000"), mustAP("192.168.0.1:443")) {
		t.Error("an IPv4-mapped address should match an IPv4 prefix")
	}
	if f.Match(mustAP("10.1.2.3:50000"), mustAP("10.0.0.1:22")) {
		t.Error("port 22 matched")
	}
	if f.Match(mustAP("11.1.2.3:50000"), mustAP("192.168.0.1:8080")) {
		t.Error("address 11.1.2.3 matched")
	}
	if !(Filter{}).Match(mustAP("1.2.3.4:1"), mustAP("5.6.7.8:2")) {
		t.Error("the empty filter should match all")
	}
	if got, want := f.tracefsFilter("sock/inet_sock_set_state"), "protocol == 6 && (sport == 443 || dport == 443 || sport == 8080 || dport == 8080)"; got != want {
		t.Errorf("set_state filter %q, want %q", got, want)
	}
	if got := f.tracefsFilter("tcp/tcp_send_reset"); got != "" {
		t.Errorf("send_reset filter %q, want none", got)
	}
	if got := (Filter{}).tracefsFilter("tcp/tcp_retransmit_skb"); got != "" {
		t.Errorf("no ports: filter %q", got)
	}
}
