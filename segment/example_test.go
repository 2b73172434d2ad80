package segment_test

import (
	"encoding/hex"
	"fmt"

	"github.com/finproxy/finproxy/segment"
)

// Decode a queued IPv4 segment (a FIN|ACK recorded on a real connection) into a Segment.
func ExampleDecoder() {
	pkt, _ := hex.DecodeString("4500003484e240004006b7df7f0000017f000001a7441f90a7b7cad78e2eca0080110040fe280000" +
		"0101080a2aa492193a3fb75c")
	d := segment.NewDecoder()
	var s segment.Segment
	if err := d.Decode(pkt, &s); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.String())
	fmt.Println("FIN:", s.Flags.Has(segment.FIN), "pure ACK:", s.IsPureACK(), "sequence space:", s.SeqLen())
	// Output:
	// 127.0.0.1:42820 > 127.0.0.1:8080 FIN|ACK seq=2813840087 ack=2385431040 len=0
	// FIN: true pure ACK: false sequence space: 1
}
