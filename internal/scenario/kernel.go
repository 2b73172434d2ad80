package scenario

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/finproxy/finproxy/lab"
)

// KernelReport is what the kernels of the two ends counted during a run: the TCP counters
// of each namespace (nstat's names: TcpRetransSegs, TcpExtPAWSEstab, ...) that changed,
// and a sentence for each change that says something about the teardown.
type KernelReport struct {
	Client KernelSide `json:"client"`
	Server KernelSide `json:"server"`
}

// KernelSide is one namespace's part of a KernelReport.
type KernelSide struct {
	// Counters holds every TCP counter that changed, by how much.
	Counters map[string]int64 `json:"counters"`
	// Notes explains the changes of the counters in notable, in that order.
	Notes []string `json:"notes"`
}

// notable are the counters whose change says what the kernel did with a teardown, with
// what one unit of them means.
var notable = []struct{ name, means string }{
	{"TcpExtPAWSEstab", "segment dropped by PAWS on a connection (its timestamp older than the newest seen: an old duplicate rejected)"},
	{"TcpExtPAWSTimewait", "segment refused by a timewait socket's PAWS check (its timestamp older than the newest seen: a SYN refused, or an old segment)"},
	{"TcpExtPAWSActive", "SYN-ACK dropped by PAWS on a connect"},
	{"TcpExtTWRecycled", "TIME_WAIT socket reused for a new outgoing connection (tcp_tw_reuse)"},
	// The kernel counts each timewait socket once, when its first timer is set (Linux 5.18
	// on; at its expiry before): as killed when that timer is 4 s or less, else as TW. A
	// RST that ends a TIME_WAIT counts in neither.
	{"TcpExtTW", "timewait socket with a full timer (TIME_WAIT's 60 s, or a long tcp_fin_timeout)"},
	{"TcpExtTWKilled", "timewait socket with a short timer (4 s or less: an orphan's FIN_WAIT2 under a short tcp_fin_timeout), not a full TIME_WAIT"},
	{"TcpExtTCPTimeWaitOverflow", "socket closed without TIME_WAIT: the TIME_WAIT table was full (tcp_max_tw_buckets)"},
	{"TcpExtTCPChallengeACK", "challenge ACK sent (RFC 5961: a RST or SYN in the window but not exactly expected)"},
	{"TcpExtTCPSYNChallenge", "SYN on a synchronized connection answered with a challenge ACK"},
	{"TcpExtTCPDSACKOldSent", "D-SACK sent: data received a second time"},
	{"TcpExtTCPDSACKRecv", "D-SACK received: the peer got data twice"},
	{"TcpExtTCPAbortOnClose", "connection reset at close(): unread data in the receive queue"},
	{"TcpExtTCPAbortOnData", "connection reset: data arrived after the application closed"},
	{"TcpExtTCPAbortOnTimeout", "connection aborted: too many retransmissions"},
	{"TcpExtTCPAbortOnLinger", "connection reset at close() with SO_LINGER 0"},
	{"TcpExtTCPLossProbes", "tail loss probe sent (the last segment sent again before the RTO)"},
	{"TcpExtTCPTimeouts", "retransmission timer expired"},
	{"TcpExtTCPSynRetrans", "SYN or SYN-ACK sent again"},
	{"TcpRetransSegs", "segment retransmitted"},
	{"TcpEstabResets", "connection reset from ESTABLISHED or CLOSE_WAIT"},
	{"TcpOutRsts", "RST sent"},
	{"TcpAttemptFails", "connection attempt failed"},
}

// kernelSnapshot reads the TCP counters of the client and server namespaces (nil for a
// namespace that cannot be read).
func kernelSnapshot(t *lab.Topology) [2]map[string]int64 {
	var s [2]map[string]int64
	for i, role := range []string{lab.RoleClient, lab.RoleServer} {
		s[i], _ = t.TCPCounters(role)
	}
	return s
}

// kernelDelta is what changed between two snapshots; nil when either is missing.
func kernelDelta(before, after [2]map[string]int64) *KernelReport {
	if before[0] == nil || before[1] == nil || after[0] == nil || after[1] == nil {
		return nil
	}
	return &KernelReport{Client: kernelSide(before[0], after[0]), Server: kernelSide(before[1], after[1])}
}

func kernelSide(before, after map[string]int64) KernelSide {
	ks := KernelSide{Counters: map[string]int64{}, Notes: []string{}}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		// Gauges (CurrEstab) and constants (MaxConn, RtoMin) change too; they count nothing.
		if k == "TcpCurrEstab" || strings.HasPrefix(k, "TcpRto") || k == "TcpMaxConn" {
			continue
		}
		if d := after[k] - before[k]; d != 0 {
			ks.Counters[k] = d
		}
	}
	for _, n := range notable {
		if d := ks.Counters[n.name]; d != 0 {
			ks.Notes = append(ks.Notes, fmt.Sprintf("%s %+d: %s", n.name, d, n.means))
		}
	}
	return ks
}

// KernelTotals adds up the kernel counters of every run that has them; nil when none has.
func (r *LabReport) KernelTotals() *KernelReport {
	var sum [2]map[string]int64
	n := 0
	for _, run := range r.Runs {
		if run.Kernel == nil {
			continue
		}
		n++
		for i, ks := range []KernelSide{run.Kernel.Client, run.Kernel.Server} {
			if sum[i] == nil {
				sum[i] = map[string]int64{}
			}
			for k, v := range ks.Counters {
				sum[i][k] += v
			}
		}
	}
	if n == 0 {
		return nil
	}
	zero := map[string]int64{}
	return &KernelReport{Client: kernelSide(zero, sum[0]), Server: kernelSide(zero, sum[1])}
}
