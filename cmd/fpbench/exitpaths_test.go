package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/finproxy/finproxy/internal/nstest"
)

// The benchmark removes what it made on every exit path a signal gives it: SIGTERM
// (scripts/test's timeout), SIGINT (Ctrl-C), SIGHUP (a closed terminal or session) and a
// closed stderr (SIGPIPE at its next log line): no namespace of its lab and no process it
// started is left. It runs in a process group of its own: what is left of it is found
// there, and only there.
func TestBenchCleansUpOnEveryExit(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "iptables")
	bin := filepath.Join(t.TempDir(), "fpbench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build fpbench: %v\n%s", err, out)
	}
	labRE := regexp.MustCompile(`lab (fpbench-[0-9a-f]{8}): namespaces`)
	for _, tc := range []struct {
		name        string
		sig         syscall.Signal
		closeStderr bool
	}{
		{"SIGTERM", syscall.SIGTERM, false},
		{"SIGINT", syscall.SIGINT, false},
		{"SIGHUP", syscall.SIGHUP, false},
		{"closed stderr", syscall.SIGTERM, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The direct variant's bulk transfer for 20s: the signal comes in its middle.
			cmd := exec.Command(bin, "--smoke", "--parts", "compare", "--variants", "direct", "--duration", "20s")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pgid := cmd.Process.Pid
			t.Cleanup(func() {
				// Whatever is left of the group this test made, and only that.
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				_ = cmd.Wait()
			})
			var id string
			var log strings.Builder
			sc := bufio.NewScanner(stderr)
			deadline := time.AfterFunc(60*time.Second, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
			for sc.Scan() {
				log.WriteString(sc.Text() + "\n")
				if m := labRE.FindStringSubmatch(sc.Text()); m != nil {
					id = m[1]
				}
				if strings.Contains(sc.Text(), "rep 1: direct") {
					break
				}
			}
			deadline.Stop()
			if id == "" {
				t.Fatalf("the benchmark never named its lab:\n%s", log.String())
			}
			nss := []string{id + "-client", id + "-router", id + "-server"}
			t.Cleanup(func() {
				// What this test's benchmark left, if it failed to remove it: by name.
				for _, ns := range nss {
					if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
						_ = exec.Command("ip", "netns", "delete", ns).Run()
					}
				}
				_ = os.Remove(filepath.Join("/run/finproxy/lab", id+".lock"))
			})
			for _, ns := range nss {
				if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
					t.Fatalf("namespace %s of the running benchmark: %v: the checks below would prove nothing", ns, err)
				}
			}
			if tc.closeStderr {
				stderr.Close()
				// Its next log lines (the bulk transfer's client, the settle) meet the
				// closed pipe; then it is asked to stop.
				time.Sleep(3 * time.Second)
			} else {
				go func() {
					for sc.Scan() {
					}
				}()
			}
			if err := syscall.Kill(pgid, tc.sig); err != nil {
				t.Errorf("signal the benchmark: %v (did it die of the closed stderr?)", err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						t.Errorf("the benchmark was killed by %v: no teardown ran", ws.Signal())
					}
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("the benchmark did not end within 60s of %v", tc.sig)
			}
			for _, ns := range nss {
				if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
					t.Errorf("namespace %s left behind", ns)
				}
			}
			// The benchmark's helpers are in its process group (none makes its own).
			time.Sleep(200 * time.Millisecond)
			if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
				out, _ := exec.Command("ps", "-o", "pid,pgid,args", "-g", strconv.Itoa(pgid)).CombinedOutput()
				t.Errorf("processes of the benchmark left behind (kill -0: %v):\n%s", err, out)
			}
		})
	}
}
