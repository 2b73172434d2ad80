package nfq

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseKernelStats(t *testing.T) {
	// Lines as the kernel writes them ("%5u %6u %5u %1u %5u %5u %5u %8u %2d"):
	// "recorded" ones were read on this project's 6.18 VM; the others are made
	// from them, some damaged.
	for _, tc := range []struct {
		name    string
		in      string
		want    []KernelQueueStats
		wantErr string
	}{
		{name: "empty", in: ""},
		{
			name: "recorded: two bound queues",
			in:   "  100   4807     0 2 65531     0     0        0  1\n    7 3858127395     0 2 65531     0     0        0  1\n",
			want: []KernelQueueStats{
				{Queue: 100, PortID: 4807, CopyMode: 2, CopyRange: 65531},
				{Queue: 7, PortID: 3858127395, CopyMode: 2, CopyRange: 65531},
			},
		},
		{
			name: "one queue",
			in:   "  100 3456789    12 2 65531     0     0       42  1\n",
			want: []KernelQueueStats{{Queue: 100, PortID: 3456789, Waiting: 12, CopyMode: 2, CopyRange: 65531, IDSequence: 42}},
		},
		{
			name: "two queues with drops",
			in: "    0 -4123     0 2 65531     0     0        0  1\n" +
				"65535  98765  4096 2 65531 17000     3 4294967295  1\n" +
				"    7   1234     1 2 65531     5     2      300  1\n",
			want: []KernelQueueStats{
				{Queue: 65535, PortID: 98765, Waiting: 4096, CopyMode: 2, CopyRange: 65531, Dropped: 17000, UserDropped: 3, IDSequence: 4294967295},
				{Queue: 7, PortID: 1234, Waiting: 1, CopyMode: 2, CopyRange: 65531, Dropped: 5, UserDropped: 2, IDSequence: 300},
			},
			wantErr: `line 1 "0 -4123`,
		},
		{
			name:    "truncated line",
			in:      "    1   2222     0 2\n    2   3333     0 2 65531     0     0        9  1\n",
			want:    []KernelQueueStats{{Queue: 2, PortID: 3333, CopyMode: 2, CopyRange: 65531, IDSequence: 9}},
			wantErr: "4 fields, want 9",
		},
		{
			name:    "queue number out of range",
			in:      "70000   2222     0 2 65531     0     0        9  1\n",
			wantErr: "out of range",
		},
		{
			name:    "garbage",
			in:      "hello world this is not the file you want\n\n",
			wantErr: "invalid syntax",
		},
		{
			name: "no trailing newline, 8 fields",
			in:   "    3   2222     0 2 65531     0     0        9",
			want: []KernelQueueStats{{Queue: 3, PortID: 2222, CopyMode: 2, CopyRange: 65531, IDSequence: 9}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKernelStats(tc.in)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("stats (-want +got):\n%s", d)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestKernelStatsUnboundQueue(t *testing.T) {
	// Queue 65000 is bound by nobody here: whether or not the module is loaded (the
	// file exists, or not at all), the answer is ErrQueueNotBound, and says which queue.
	_, err := KernelStats(65000)
	if !errors.Is(err, ErrQueueNotBound) || !strings.Contains(err.Error(), "queue 65000") {
		t.Errorf("KernelStats(65000) = %v, want ErrQueueNotBound naming queue 65000", err)
	}
}
