package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
)

// scrape reads url and checks it with promtool check metrics.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v:\n%s", err, out)
	}
	return string(body)
}

// watch --metrics: a server that never closes its end shows as a CLOSE_WAIT leak named by
// its pid and command, its socket as a server socket in CLOSE_WAIT; promtool finds the
// exposition clean.
func TestObserveWatchMetrics(t *testing.T) {
	nstest.RequireTool(t, "promtool")
	topo := newLab(t)
	const port = 18106
	w := startWatch(t, "finproxy watch", "--close-wait", "1s", "--duration", "8s", "--metrics", "127.0.0.1:0",
		"--observe-netns", topo.Server, "--port", fmt.Sprint(port), "--json")
	m := regexp.MustCompile(`metrics on (http://\S+/metrics)`).FindStringSubmatch(w.output())
	if m == nil {
		t.Fatalf("watch --metrics did not say where:\n%s", w.output())
	}
	srv := server(t, topo, port, "--mode", "leak", "--count", "1")
	client(t, topo, port, "--mode", "send-close", "--bytes", "1000", "--count", "1")
	time.Sleep(2 * time.Second)
	body := scrape(t, m[1])
	for _, want := range []string{
		fmt.Sprintf(`finproxy_close_wait_leaks{comm="finproxy",pid="%d"} 1`, srv.pid()),
		`finproxy_observed_sockets{side="server",state="CLOSE_WAIT"} 1`,
		`finproxy_observed_sockets{side="client",state="FIN_WAIT2"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(body, "finproxy_"))
		}
	}
	t.Logf("metrics:\n%s", grepLines(body, "finproxy_"))
	w.wait(15 * time.Second)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
