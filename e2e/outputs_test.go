package e2e

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/finproxy/finproxy/internal/nstest"
)

// fullDiskScript runs finproxy run (local hook, lost-fin) in a network namespace and a
// mount namespace of its own, with its event log on a 64 KiB tmpfs mounted there, while
// 300 connections go through: the disk fills in the middle of the run. It prints
// finproxy's output, then the whole lines the file holds.
const fullDiskScript = `set -u
F=$1
mount --make-rprivate /
d=$(mktemp -d); mount -t tmpfs -o size=64k none "$d"
ip link set lo up
"$F" app server --listen 127.0.0.1:9999 --mode echo-close --count 0 >/dev/null 2>&1 &
srv=$!
"$F" run -c lost-fin --port 9999 --log "$d/events.jsonl" --duration 6s --no-observe 2>&1 &
run=$!
sleep 1
"$F" app client --connect 127.0.0.1:9999 --mode send-close --bytes 10 --count 300 >/dev/null 2>&1
wait $run; echo "run exit $?"
kill $srv; wait $srv 2>/dev/null
echo "whole lines: $(wc -l < "$d/events.jsonl")"
umount "$d"; rmdir "$d"
`

// A disk that fills during the run: the write error is reported when it happens, and the
// summary's "N logged" is the number of whole lines in the file, with a warning counting
// the lines lost.
func TestRunEventLogFullDisk(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "unshare")
	nstest.RequireTool(t, "iptables")
	out, err := exec.Command("unshare", "-m", "-n", "bash", "-c", fullDiskScript, "_", finproxyBin).CombinedOutput()
	s := string(out)
	t.Logf("%v\n%s", err, s)
	whole := regexp.MustCompile(`whole lines: (\d+)`).FindStringSubmatch(s)
	logged := regexp.MustCompile(`(\d+) logged`).FindStringSubmatch(s)
	if whole == nil || logged == nil {
		t.Fatalf("no line count or no summary")
	}
	n, _ := strconv.Atoi(whole[1])
	if n == 0 || n > 1000 {
		t.Fatalf("%d whole lines: the 64 KiB disk should have cut the log in its middle", n)
	}
	if logged[1] != whole[1] {
		t.Errorf("the summary says %s logged, the file holds %s whole lines", logged[1], whole[1])
	}
	for _, want := range []string{"write failed", "no space left on device", "WARNING: the event log lost", "run exit 1"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in the output", want)
		}
	}
	// The warning came when the disk filled, before the summary.
	if w, sum := strings.Index(s, "write failed"), strings.Index(s, "RULE "); w < 0 || sum < 0 || w > sum {
		t.Errorf("the write error was not reported before the end of the run")
	}
}
