package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/finproxy/finproxy/configs"
	"github.com/finproxy/finproxy/control"
	"github.com/finproxy/finproxy/control/client"
	"github.com/finproxy/finproxy/internal/obsmetrics"
	"github.com/finproxy/finproxy/internal/runner"
	"github.com/finproxy/finproxy/rules"
	"github.com/spf13/cobra"
)

// serveFlags are the listener flags of finproxy serve.
type serveFlags struct {
	nice         int
	listen       string
	unix         string
	allowRemote  bool
	tokenFile    string
	observe      bool
	observeNetns []string
	closeWait    time.Duration
}

// check validates the listener flags and returns the token ("" when none is needed).
func (f *serveFlags) check() (string, error) {
	if f.listen == "" && f.unix == "" {
		return "", errors.New("--listen \"\" needs --unix PATH: the API must listen somewhere")
	}
	if (f.observe || len(f.observeNetns) > 0) && f.closeWait <= 0 {
		return "", fmt.Errorf("--close-wait %v: want a positive duration", f.closeWait)
	}
	var token string
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return "", fmt.Errorf("--token-file %s: the file is empty", f.tokenFile)
		}
	}
	if f.listen == "" {
		return token, nil
	}
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: want HOST:PORT: %w", f.listen, err)
	}
	ip := net.ParseIP(host)
	if host == "localhost" || ip != nil && ip.IsLoopback() {
		return token, nil
	}
	if !f.allowRemote {
		return "", fmt.Errorf("--listen %s is not a loopback address: anyone who reaches it can change the faults; give --allow-remote and --token-file", f.listen)
	}
	if token == "" {
		return "", fmt.Errorf("--allow-remote needs --token-file: requests to %s must carry a bearer token", f.listen)
	}
	return token, nil
}

func newServeCmd() *cobra.Command {
	var (
		tf      targetFlags
		sf      serveFlags
		cfgPath string
	)
	cmd := &cobra.Command{
		Use:   "serve [-c CONFIG]",
		Short: "Run with a rule set that tests replace through an HTTP API (127.0.0.1:8474)",
		Long: `serve runs like run, until Ctrl-C, and listens for the control API (see finproxy ctl and
the Go package control/client): replace the rule set, switch one rule on or off, load a
preset, read counters and Prometheus metrics (/metrics), follow the verdicts. It starts with
the rule set of -c, or with none (no hooks) until one is loaded. Every rule set is checked as
finproxy check checks a file, and the flags --port and --hook apply to each.`,
		Example: `  sudo finproxy serve --netns app
  sudo finproxy serve -c lost-final-ack --port 6379 --unix /run/finproxy.sock
  sudo finproxy serve --listen 0.0.0.0:8474 --allow-remote --token-file /etc/finproxy/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			surviveClosedOutput()
			token, err := sf.check()
			if err != nil {
				return &exitError{2, err}
			}
			var (
				cfg    *rules.Config
				source []byte
			)
			switch {
			case cfgPath != "":
				loaded, err := loadConfig(cmd.Context(), cfgPath, cmd.InOrStdin())
				if err != nil {
					return &exitError{2, err}
				}
				cfg = &loaded.Config
				if err := tf.apply(cfg); err != nil {
					return &exitError{2, err}
				}
				source = configSource(cfgPath)
			case tf.port != 0:
				cfg = &rules.Config{Name: "empty", Target: rules.Target{Port: uint16(tf.port)}}
				if err := tf.apply(cfg); err != nil {
					return &exitError{2, err}
				}
			}
			if err := enterNetns(tf.netns); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("serve needs root (NFQUEUE and iptables): try sudo")
			}
			applyNice(slog.Default(), sf.nice)
			// Before anything is hooked: from here on, however finproxy ends, its hooks go.
			if err := startWatchdog(slog.Default()); err != nil {
				return fmt.Errorf("start the watchdog that removes the hooks if finproxy is killed: %w", err)
			}
			return serve(cmd, cfg, source, &tf, &sf, token)
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "the first rule set: a TOML file, or a built-in preset name (default: none)")
	cmd.Flags().StringVar(&sf.listen, "listen", client.DefaultAddr, "the API's TCP address (in the namespace of --netns); \"\" for none")
	cmd.Flags().StringVar(&sf.unix, "unix", "", "also listen on this unix socket (mode 0600)")
	cmd.Flags().BoolVar(&sf.allowRemote, "allow-remote", false, "allow --listen on a non-loopback address (needs --token-file)")
	cmd.Flags().StringVar(&sf.tokenFile, "token-file", "", "require the bearer token in this file on every request")
	cmd.Flags().BoolVar(&sf.observe, "observe", false, "observe the applications' sockets (tracepoints, sock_diag): GET /v1/connections, state changes on /v1/events")
	cmd.Flags().StringSliceVar(&sf.observeNetns, "observe-netns", nil, observeNetnsUsage+"; implies --observe")
	cmd.Flags().DurationVar(&sf.closeWait, "close-wait", defaultCloseWait, "CLOSE_WAIT leak threshold of the metrics (finproxy_close_wait_leaks)")
	addNiceFlag(cmd, &sf.nice)
	tf.add(cmd)
	return cmd
}

// configSource is the text of -c (a file or a preset), for GET /v1/rules; nil for stdin.
func configSource(arg string) []byte {
	if arg == "-" {
		return nil
	}
	if b, err := os.ReadFile(arg); err == nil {
		return b
	}
	b, _, _ := configs.Read(arg)
	return b
}

func serve(cmd *cobra.Command, cfg *rules.Config, source []byte, tf *targetFlags, sf *serveFlags, token string) (err error) {
	ctx := cmd.Context()
	log := slog.Default()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	if sf.listen != "" {
		ln, lerr := net.Listen("tcp", sf.listen)
		if lerr != nil {
			return fmt.Errorf("--listen: %w", lerr)
		}
		lns = append(lns, ln)
	}
	if sf.unix != "" {
		ln, lerr := listenUnix(sf.unix)
		if lerr != nil {
			return fmt.Errorf("--unix: %w", lerr)
		}
		lns = append(lns, ln)
	}

	var api atomic.Pointer[control.Server]
	queue := uint16(tf.queue) // checked: 0 or 1 to 65535
	if queue == 0 && cfg != nil {
		queue = cfg.Target.Queue
	}
	var oo *runner.ObserveOptions
	var oports []uint16
	if sf.observe || len(sf.observeNetns) > 0 {
		oo = &runner.ObserveOptions{NetNS: sf.observeNetns, Nice: runner.ObserverNice(sf.nice)}
		if tf.port != 0 {
			oports = []uint16{uint16(tf.port)}
		}
	}
	svc, err := runner.Serve(ctx, runner.ServeOptions{
		Queue:        queue,
		Config:       cfg,
		Logger:       log,
		Observe:      oo,
		ObservePorts: oports,
		OnRecord: func(r rules.Record) {
			if s := api.Load(); s != nil {
				s.Record(r)
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		res, cerr := svc.Close()
		err = errors.Join(err, cerr)
		if res != nil {
			printSummary(cmd.OutOrStdout(), res)
			err = panicExit(res, err)
		}
	}()
	var observed *serveObserved
	if o := svc.Observer(); o != nil {
		observed = &serveObserved{svc: svc, o: o}
		observed.coll = obsmetrics.New(o, sf.closeWait, observed.filter)
	}
	srv := control.New(control.Options{
		Backend:  svc,
		Observed: observedOrNil(observed),
		Token:    token,
		Logger:   log,
		Check: func(c *rules.Config) error {
			// As check applies its flags; the queue is serve's own.
			t := *tf
			t.queue = 0
			return t.apply(c)
		},
	})
	if cfg != nil {
		srv.SetInitial(cfg, source)
	}
	api.Store(srv)
	if observed != nil {
		if err := srv.Register(observed.coll); err != nil {
			return fmt.Errorf("observation metrics: %w", err)
		}
		fctx, stop := context.WithCancel(ctx)
		defer stop()
		go observed.follow(fctx, srv)
	}
	// ReadTimeout bounds a request's upload (a rule set); responses have no deadline, as
	// event streams last.
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- hs.Serve(ln) }()
	}
	var where []string
	for _, ln := range lns {
		where = append(where, ln.Addr().Network()+":"+ln.Addr().String())
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "finproxy: ready: serving the control API on %s (queue %d)\n", strings.Join(where, ", "), svc.Queue())
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("control API: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil {
		hs.Close() // event streams do not end by themselves
	}
	return err
}

// listenUnix listens on a unix socket only its owner can use (mode 0600 from the start).
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		// A socket nobody answers on is a leftover of a finproxy that died.
		if c, derr := net.Dial("unix", path); derr == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process listens on it", path)
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	return ln, err
}

// observedOrNil keeps a nil *serveObserved a nil interface.
func observedOrNil(o *serveObserved) control.Observed {
	if o == nil {
		return nil
	}
	return o
}
