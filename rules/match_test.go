package rules

import (
	"testing"

	"github.com/finproxy/finproxy/segment"
)

func TestMatches(t *testing.T) {
	ack := seg(testClient, testServer, fACK, 1, 1, 0)
	data := seg(testClient, testServer, fPSH|fACK, 1, 1, 10)
	finAck := seg(testClient, testServer, fFIN|fACK, 1, 1, 0)
	ackECE := seg(testClient, testServer, fACK|segment.ECE, 1, 1, 0)
	tests := []struct {
		name   string
		m      Match
		side   Side
		s      segment.Segment
		phases Phase
		want   bool
	}{
		{"zero matches all", Match{}, Server, data, 0, true},
		{"side", Match{Side: Client}, Client, ack, 0, true},
		{"other side", Match{Side: Server}, Client, ack, 0, false},
		{"server port, client side", Match{ServerPort: 8080}, Client, ack, 0, true},
		{"server port, server side", Match{ServerPort: 8080}, Server, seg(testServer, testClient, fACK, 1, 1, 0), 0, true},
		{"other server port", Match{ServerPort: 8081}, Client, ack, 0, false},
		{"other server port, server side", Match{ServerPort: 8081}, Server, seg(testServer, testClient, fACK, 1, 1, 0), 0, false},
		{"server address, client side", Match{ServerAddr: testServer.Addr()}, Client, ack, 0, true},
		{"server address, server side", Match{ServerAddr: testServer.Addr()}, Server, seg(testServer, testClient, fACK, 1, 1, 0), 0, true},
		{"other server address", Match{ServerAddr: testClient.Addr()}, Client, ack, 0, false},
		{"other server address, server side", Match{ServerAddr: testClient.Addr()}, Server, seg(testServer, testClient, fACK, 1, 1, 0), 0, false},
		{"exact flags", Match{Flags: fFIN | fACK, FlagsSet: true}, Client, finAck, 0, true},
		{"exact flags, more set", Match{Flags: fFIN, FlagsSet: true}, Client, finAck, 0, false},
		{"exact none", Match{Flags: 0, FlagsSet: true}, Client, ack, 0, false},
		{"exact flags ignore ECE", Match{Flags: fACK, FlagsSet: true}, Client, ackECE, 0, true},
		{"pure ack", Match{PureACK: true}, Client, ack, 0, true},
		{"pure ack with ECE", Match{PureACK: true}, Client, ackECE, 0, true},
		{"pure ack, data", Match{PureACK: true}, Client, data, 0, false},
		{"pure ack, FIN", Match{PureACK: true}, Client, finAck, 0, false},
		{"has FIN", Match{HasFlags: fFIN}, Client, finAck, 0, true},
		{"has FIN, none", Match{HasFlags: fFIN}, Client, ack, 0, false},
		{"payload some", Match{Payload: 1}, Client, data, 0, true},
		{"payload some, none", Match{Payload: 1}, Client, ack, 0, false},
		{"payload none", Match{Payload: -1}, Client, ack, 0, true},
		{"payload none, some", Match{Payload: -1}, Client, data, 0, false},
		{"phase", Match{Phases: PhaseAfterClientFIN}, Client, ack, PhaseAfterClientFIN | PhaseAckOfServerFIN, true},
		{"phases all", Match{Phases: PhaseAfterClientFIN | PhaseAfterServerFIN}, Client, ack, PhaseAfterClientFIN, false},
		{"phase missing", Match{Phases: PhaseEstablished}, Client, ack, PhaseHandshake, false},
	}
	for _, tt := range tests {
		if got := tt.m.Matches(tt.side, &tt.s, tt.phases); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
