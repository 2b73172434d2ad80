package nfq_test

import (
	"context"
	"fmt"

	"github.com/finproxy/finproxy/nfq"
)

// A Handler decides each packet; verdicts are written by the queue's writer in the order
// they were given. OpenFake stands in for the kernel (nfq.Open needs CAP_NET_ADMIN).
func ExampleOpenFake() {
	var q *nfq.Queue
	q, k, err := nfq.OpenFake(context.Background(), nfq.Config{Num: 7}, func(p nfq.Packet) {
		if len(p.Data) > 0 && p.Data[0] == 'x' {
			_ = q.Drop(p.ID)
			return
		}
		_ = q.Accept(p.ID)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	k.Deliver(1, []byte("a segment"))
	k.Deliver(2, []byte("x marks a drop"))
	k.Flush() // the verdicts given so far have been written
	v := k.Verdicts()
	fmt.Println("accepted", v.Accepted, "dropped", v.Dropped)
	if err := q.Close(); err != nil {
		fmt.Println(err)
	}
	// Output: accepted 1 dropped 1
}
