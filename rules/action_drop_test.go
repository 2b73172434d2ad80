package rules

import "testing"

func TestDropAction(t *testing.T) {
	h := newHarness(t, cfgOf(rule("drop-rst", Match{HasFlags: fRST}, "drop", &DropAction{})), Options{})
	h.handle(seg(testClient, testServer, fRST, 1, 0, 0))
	h.handle(seg(testClient, testServer, fACK, 1, 0, 0))
	h.wantEvents("1 client RST drop drop-rst/drop", "2 client ACK accept")
	h.wantCounters(Counters{Rule: "drop-rst", Matched: 1, Dropped: 1})
}
