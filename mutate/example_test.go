package mutate_test

import (
	"fmt"
	"net/netip"

	"github.com/finproxy/finproxy/mutate"
	"github.com/finproxy/finproxy/segment"
)

// A sender's last data segment and its bare FIN, merged into one segment that carries
// both (scenario 7: a FIN carrying data), then a RST crafted toward the sender from what
// the receiver would expect.
func Example() {
	client := netip.MustParseAddrPort("198.18.1.2:40000")
	server := netip.MustParseAddrPort("198.18.2.2:8080")
	data, _ := mutate.Build(mutate.Spec{Src: client, Dst: server, Flags: segment.PSH | segment.ACK,
		Seq: 1001, Ack: 5001, Window: 502, Payload: []byte("last words\n")})
	fin, _ := mutate.Build(mutate.Spec{Src: client, Dst: server, Flags: segment.FIN | segment.ACK,
		Seq: 1012, Ack: 5001, Window: 502})

	s, err := mutate.Parse(data)
	if err != nil {
		panic(err)
	}
	next, _ := mutate.Parse(fin)
	if err := s.Append(next); err != nil {
		panic(err)
	}
	merged, err := s.Bytes()
	if err != nil {
		panic(err)
	}
	fmt.Println(s)
	fmt.Println("checksums:", mutate.Check(merged) == nil)
	// The receiver acknowledges data and FIN at once: ack = seq + len + 1.
	fmt.Println("ack of both:", s.Seq()+uint32(len(s.Payload()))+1)

	// A reset toward the client: the seq is what the client expects next from the server.
	rst, _ := mutate.Reset(server, client, 5001, 1013)
	r, _ := mutate.Parse(rst)
	fmt.Println(r)
	// Output:
	// 198.18.1.2:40000 > 198.18.2.2:8080 FIN|PSH|ACK seq=1001 ack=5001 len=11
	// checksums: true
	// ack of both: 1013
	// 198.18.2.2:8080 > 198.18.1.2:40000 RST|ACK seq=5001 ack=1013 len=0
}
