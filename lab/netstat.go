package lab

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParseNetstat reads the counters of /proc/net/netstat or /proc/net/snmp: pairs of lines,
// a header "Prefix: Name1 Name2 ..." and the values "Prefix: v1 v2 ...". Counters are
// named Prefix+Name without the colon ("TcpExtPAWSEstab", "TcpRetransSegs"), as nstat
// names them. A pair whose lines disagree (prefix or count) is an error naming its line.
func ParseNetstat(data []byte) (map[string]int64, error) {
	m := map[string]int64{}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) == 1 && len(lines[0]) == 0 {
		return m, nil
	}
	if len(lines)%2 != 0 {
		return nil, fmt.Errorf("netstat: %d lines, want header and value lines in pairs", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		names, values := strings.Fields(string(lines[i])), strings.Fields(string(lines[i+1]))
		if len(names) == 0 || !strings.HasSuffix(names[0], ":") {
			return nil, fmt.Errorf("netstat line %d: %q is not a header", i+1, lines[i])
		}
		if len(values) != len(names) || values[0] != names[0] {
			return nil, fmt.Errorf("netstat line %d: %d fields for %s, the header has %d", i+2, len(values), names[0], len(names))
		}
		prefix := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			v, err := strconv.ParseInt(values[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("netstat line %d: %s%s: %w", i+2, prefix, names[j], err)
			}
			m[prefix+names[j]] = v
		}
	}
	return m, nil
}

// TCPCounters returns the kernel's TCP counters of the role's namespace (Tcp from
// /proc/net/snmp, TcpExt from /proc/net/netstat), named as ParseNetstat names them.
func (t *Topology) TCPCounters(role string) (map[string]int64, error) {
	out := map[string]int64{}
	err := t.Do(role, func() error {
		// thread-self: /proc/self/net is the main thread's namespace, not this thread's.
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			m, err := ParseNetstat(data)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			for k, v := range m {
				if strings.HasPrefix(k, "Tcp") {
					out[k] = v
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: TCP counters of the %s namespace: %w", role, err)
	}
	return out, nil
}
