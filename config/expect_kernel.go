package config

import (
	"fmt"
	"math"
	"regexp"

	"github.com/BurntSushi/toml"
	"github.com/finproxy/finproxy/internal/tomlpos"
	"github.com/finproxy/finproxy/rules"
)

// KernelExpect is a bound on how much one of a side's kernel TCP counters changed during
// a run ([expect.kernel.client] or [expect.kernel.server]): what the kernel did with the
// faults, such as a segment dropped by PAWS (TcpExtPAWSEstab) or a connection reset
// (TcpEstabResets). Counters are nstat's names, from /proc/net/snmp and netstat of the
// side's namespace; one that did not change counts 0.
type KernelExpect struct {
	Side    rules.Side
	Counter string
	// Min and Max bound the change; Max is -1 for no bound.
	Min, Max int64
	Pos      rules.Position
}

// String is "server TcpExtPAWSEstab".
func (k *KernelExpect) String() string { return fmt.Sprintf("%s %s", k.Side, k.Counter) }

// CountText says what change k wants: "exactly 1", "at least 1", "at most 2", "1 to 3".
func (k *KernelExpect) CountText() string {
	s := SegmentExpect{Min: int(k.Min), Max: int(k.Max)}
	if k.Max == 0 {
		return "0 (unchanged)"
	}
	return s.CountText()
}

// counterName is the shape of nstat's counter names: the table's prefix (Tcp, TcpExt,
// Ip, IpExt, Udp, ...) and the field.
var counterName = regexp.MustCompile(`^(Ip|IpExt|Icmp|IcmpMsg|Tcp|TcpExt|Udp|UdpLite|MPTcpExt)[A-Z][A-Za-z0-9]*$`)

var kernelBoundKeys = []string{"min", "max"}

// loadKernelExpect reads [expect.kernel]: a table per side, each counter an exact
// change (TcpExtPAWSEstab = 1) or bounds ({ min = 1 }, { max = 0 }, { min = 1, max = 3 }).
func (l *loader) loadKernelExpect(p tomlpos.Path, v toml.Primitive) []KernelExpect {
	sides, ok := l.table(p, v)
	if !ok {
		return nil
	}
	var out []KernelExpect
	for _, sk := range sortedKeys(sides) {
		sp := p.Key(sk)
		var side rules.Side
		switch sk {
		case "client":
			side = rules.Client
		case "server":
			side = rules.Server
		default:
			l.unknownKey(sp, sk, []string{"client", "server"})
			continue
		}
		counters, ok := l.table(sp, sides[sk])
		if !ok {
			continue
		}
		for _, name := range sortedKeys(counters) {
			cp := sp.Key(name)
			if !counterName.MatchString(name) {
				l.keyErr(cp, "%q is not a kernel counter name (nstat's, such as TcpExtPAWSEstab or TcpEstabResets)", name)
				continue
			}
			lc := l.loc.At(cp)
			k := KernelExpect{Side: side, Counter: name, Max: -1, Pos: rules.Position{File: l.file, Line: lc.Line, Col: lc.Col}}
			switch raw := l.raw(counters[name]).(type) {
			case int64:
				if raw < 0 {
					l.valErr(cp, "%d: a counter's change is 0 or more", raw)
					continue
				}
				k.Min, k.Max = raw, raw
			case map[string]any:
				bounds, _ := l.table(cp, counters[name])
				k.Min = 0
				for _, bk := range sortedKeys(bounds) {
					bp := cp.Key(bk)
					n, ok := l.integer(bp, bounds[bk])
					if !ok {
						continue
					}
					if n < 0 || n > math.MaxInt32 {
						l.valErr(bp, "%d is out of range: want 0 to %d", n, math.MaxInt32)
						continue
					}
					switch bk {
					case "min":
						k.Min = n
					case "max":
						k.Max = n
					default:
						l.unknownKey(bp, bk, kernelBoundKeys)
					}
				}
				if len(bounds) == 0 {
					l.valErr(cp, "empty bounds: give min, max or both, or an exact change such as %s = 1", name)
					continue
				}
				if k.Max >= 0 && k.Min > k.Max {
					l.valErr(cp, "min %d is more than max %d: the expectation can never hold", k.Min, k.Max)
					continue
				}
			default:
				l.typeErr(cp, "an integer (the exact change) or a table { min = N, max = M }", raw)
				continue
			}
			out = append(out, k)
		}
	}
	return out
}
