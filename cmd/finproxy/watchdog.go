package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/nfq"
	"github.com/finproxy/finproxy/observe"
	"github.com/spf13/cobra"
)

// The watchdog removes the hooks and the tracefs instances of a run that died without
// removing them itself (SIGKILL, a crash of the Go runtime, the OOM killer). It is
// finproxy re-executed by the run, before the run installs anything, in the run's network
// and mount namespaces and in a process group of its own (a signal to the run's group, a
// terminal's Ctrl-C or hangup, does not reach it). It holds the read end of a pipe whose
// write end only the run holds: the pipe ends when the run does, however it ends. The
// watchdog then waits for the run to be dead and removes what names the run as its owner
// (nfq.RemoveOwned: pid and start time are in every rule's comment) and the run's tracefs
// instances; whatever the run removed itself, and every other run's hooks, it leaves
// alone. Then it exits: it never outlives its run by more than that removal.
//
// Nothing of its state comes from the environment: the owner is in its arguments, checked
// against its parent, and the pipes are its file descriptors 3 and 4.

const watchdogUse = "__watchdog"

// startWatchdog starts the watchdog of this process and waits until it runs.
func startWatchdog(log *slog.Logger) error {
	owner, err := nfq.Self()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		lifeR.Close()
		lifeW.Close()
		return err
	}
	cmd := exec.Command(self, watchdogUse, strconv.Itoa(owner.PID), strconv.FormatUint(owner.Start, 10))
	cmd.ExtraFiles = []*os.File{lifeR, readyW} // fds 3 and 4
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	lifeR.Close()
	readyW.Close()
	if err != nil {
		lifeW.Close()
		readyR.Close()
		return fmt.Errorf("start: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(readyR).ReadString('\n')
		readyR.Close()
		line <- l
	}()
	select {
	case l := <-line:
		if l != "ready\n" {
			lifeW.Close()
			_ = cmd.Wait()
			return errors.New("it exited before it was ready")
		}
	case <-time.After(10 * time.Second):
		lifeW.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return errors.New("not ready after 10s")
	}
	go func() {
		// It exits before this process only when something is wrong with it.
		err := cmd.Wait()
		log.Warn("the watchdog exited: if finproxy is killed now, `finproxy cleanup` must remove its hooks", "pid", cmd.Process.Pid, "err", err)
		// The write end of the life pipe stays open (out of reach of the garbage
		// collector's finalizer) as long as the watchdog runs.
		runtime.KeepAlive(lifeW)
	}()
	log.Debug("watchdog started", "pid", cmd.Process.Pid)
	return nil
}

func newWatchdogCmd() *cobra.Command {
	return &cobra.Command{
		Use:    watchdogUse + " PID START",
		Short:  "internal: removes the hooks of the finproxy run that started it when that run dies",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, perr := strconv.Atoi(args[0])
			start, serr := strconv.ParseUint(args[1], 10, 64)
			if perr != nil || serr != nil {
				return &exitError{2, fmt.Errorf("%s: bad owner %q %q", watchdogUse, args[0], args[1])}
			}
			return watchdog(nfq.Owner{PID: pid, Start: start}, os.NewFile(3, "life"), os.NewFile(4, "ready"))
		},
	}
}

// watchdogTimeout bounds the removal: the watchdog exits then, whatever is left.
const watchdogTimeout = 30 * time.Second

func watchdog(owner nfq.Owner, life, ready *os.File) error {
	// Only its run's end ends it (SIGKILL aside): not the terminal's signals, not a
	// closed stderr.
	// SIGTERM ends it (main's handler is undone): it is not needed when the run stops
	// by itself.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGTTOU, syscall.SIGTTIN, syscall.SIGQUIT)
	signal.Reset(syscall.SIGTERM)
	if os.Getppid() != owner.PID || !owner.Alive() {
		return &exitError{2, fmt.Errorf("%s: %v is not the parent of this process: it is started by `finproxy run` only", watchdogUse, owner)}
	}
	if life == nil || ready == nil {
		return &exitError{2, fmt.Errorf("%s: no pipes from the run", watchdogUse)}
	}
	if _, err := ready.WriteString("ready\n"); err != nil {
		return &exitError{2, fmt.Errorf("%s: %w", watchdogUse, err)}
	}
	ready.Close()
	_, _ = io.Copy(io.Discard, life) // until the run's end closes the pipe
	life.Close()
	// The pipe closes while the run exits; it is a zombie (dead) a moment later.
	for deadline := time.Now().Add(5 * time.Second); owner.Alive(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the pipe from finproxy pid %d closed but it runs on: its hooks are left to it", watchdogUse, owner.PID)
		}
	}
	done := make(chan []string, 1)
	go func() { done <- removeLeftovers(owner) }()
	select {
	case lines := <-done:
		if len(lines) > 0 {
			fmt.Fprintf(os.Stderr, "finproxy watchdog: run pid %d ended without removing its hooks; removed:\n  %s\n",
				owner.PID, strings.Join(lines, "\n  "))
		}
		return nil
	case <-time.After(watchdogTimeout):
		return fmt.Errorf("%s: removing the hooks of finproxy pid %d took over %v: run `finproxy cleanup`", watchdogUse, owner.PID, watchdogTimeout)
	}
}

// removeLeftovers removes what names owner in iptables, ip6tables (at once) and tracefs,
// and describes what it removed or failed to.
func removeLeftovers(owner nfq.Owner) []string {
	var (
		mu    sync.Mutex
		lines []string
		wg    sync.WaitGroup
	)
	report := func(prefix string, removed []string, err error) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range removed {
			lines = append(lines, prefix+r)
		}
		if err != nil {
			lines = append(lines, prefix+"FAILED: "+err.Error()+" (run `finproxy cleanup`)")
		}
	}
	for _, v6 := range []bool{false, true} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := map[bool]string{false: "iptables", true: "ip6tables"}[v6]
			ipt, err := nfq.NewIPTables(v6)
			if err != nil {
				return // that family was not hooked either
			}
			removed, err := nfq.RemoveOwned(ipt, owner)
			report(name+": ", removed, err)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		removed, err := observe.RemoveInstancesOf(owner.PID)
		report("tracefs instance ", removed, err)
	}()
	wg.Wait()
	return lines
}

