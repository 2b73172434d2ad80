package segment

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Flags holds TCP control bits in their wire order (FIN is bit 0).
type Flags uint8

// The TCP control bits.
const (
	FIN Flags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

var flagNames = [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// Has reports whether every bit of want is set in f.
func (f Flags) Has(want Flags) bool { return f&want == want }

// String returns the set bits joined by '|', in the order SYN, FIN, RST, PSH, ACK, URG, ECE, CWR;
// "none" for no bits.
func (f Flags) String() string {
	if f == 0 {
		return "none"
	}
	var b strings.Builder
	for _, i := range [...]int{1, 0, 2, 3, 4, 5, 6, 7} {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(flagNames[i])
		}
	}
	return b.String()
}

// MarshalText writes the flags as String does.
func (f Flags) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// ParseFlags parses a set of flag names separated by '|', '+' or ',' (case-insensitive),
// such as "FIN|ACK". "none" is the empty set.
func ParseFlags(s string) (Flags, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty flag set (write \"none\" for no flags)")
	}
	var f Flags
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' || r == '+' || r == ',' }) {
		name := strings.ToUpper(strings.TrimSpace(part))
		found := false
		for i, n := range flagNames {
			if n == name {
				f |= 1 << i
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown TCP flag %q (want SYN, FIN, RST, PSH, ACK, URG, ECE or CWR)", strings.TrimSpace(part))
		}
	}
	return f, nil
}

// Segment is the decoded view of one TCP segment.
type Segment struct {
	Src, Dst   netip.AddrPort
	Seq, Ack   uint32
	Flags      Flags
	Window     uint16
	PayloadLen int
}

// IsPureACK reports whether s carries only an acknowledgment: ACK set, no SYN, FIN or RST,
// and no payload.
func (s *Segment) IsPureACK() bool {
	return s.Flags&(SYN|FIN|RST|ACK) == ACK && s.PayloadLen == 0
}

// SeqLen is the sequence space the segment consumes: its payload plus one for SYN and for FIN.
func (s *Segment) SeqLen() uint32 {
	n := uint32(s.PayloadLen)
	if s.Flags&SYN != 0 {
		n++
	}
	if s.Flags&FIN != 0 {
		n++
	}
	return n
}

// String renders the segment as "src > dst FLAGS seq=… ack=… len=…".
func (s *Segment) String() string {
	return fmt.Sprintf("%s > %s %s seq=%d ack=%d len=%d", s.Src, s.Dst, s.Flags, s.Seq, s.Ack, s.PayloadLen)
}

// UnmarshalText parses flags as written by MarshalText.
func (f *Flags) UnmarshalText(b []byte) error {
	v, err := ParseFlags(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}
