package scenario

import (
	"testing"
	"time"

	"github.com/finproxy/finproxy/observe"
)

func TestSoonestRetransmit(t *testing.T) {
	sock := func(st observe.State, timer observe.TimerKind, ms int) observe.Socket {
		return observe.Socket{State: st, Timer: timer, Expires: time.Duration(ms) * time.Millisecond}
	}
	tests := []struct {
		name  string
		socks []observe.Socket
		want  time.Duration
		ok    bool
	}{
		{"none", nil, 0, false},
		{"time-wait only", []observe.Socket{sock(observe.TimeWait, observe.TimerTimewait, 59000)}, 0, false},
		{"keepalive only", []observe.Socket{sock(observe.Established, observe.TimerKeepalive, 300)}, 0, false},
		{"last-ack resending its FIN", []observe.Socket{
			sock(observe.TimeWait, observe.TimerTimewait, 59000),
			sock(observe.LastAck, observe.TimerRetrans, 870),
		}, 870 * time.Millisecond, true},
		{"soonest of several", []observe.Socket{
			sock(observe.FinWait1, observe.TimerRetrans, 1600),
			sock(observe.Established, observe.TimerPersist, 400),
			sock(observe.LastAck, observe.TimerRetrans, 900),
		}, 400 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := soonestRetransmit(tt.socks)
			if got != tt.want || ok != tt.ok {
				t.Errorf("soonestRetransmit = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
