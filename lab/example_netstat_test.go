package lab_test

import (
	"fmt"

	"github.com/finproxy/finproxy/lab"
)

// ParseNetstat names counters as nstat does; a run's counter changes are after - before.
func ExampleParseNetstat() {
	before, _ := lab.ParseNetstat([]byte("TcpExt: PAWSEstab TW\nTcpExt: 4 10\n"))
	after, _ := lab.ParseNetstat([]byte("TcpExt: PAWSEstab TW\nTcpExt: 5 10\n"))
	for _, name := range []string{"TcpExtPAWSEstab", "TcpExtTW"} {
		fmt.Printf("%s %+d\n", name, after[name]-before[name])
	}
	// Output:
	// TcpExtPAWSEstab +1
	// TcpExtTW +0
}
