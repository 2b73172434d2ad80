package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// checkTimeout bounds each connectivity check (unless ctx ends first).
const checkTimeout = 10 * time.Second

// checkConnectivity makes a TCP connection from the client to the server, over IPv4 and
// over IPv6, through the router, and exchanges a byte each way. The client side ends the
// connection with a reset, so that no socket of the check lingers in TIME_WAIT.
func (t *Topology) checkConnectivity(ctx context.Context) error {
	for _, dst := range []netip.Addr{t.ServerAddr, t.ServerAddr6} {
		start := time.Now()
		err := t.checkTCP(ctx, dst)
		t.log.Debug("lab connectivity check", "dst", dst, "elapsed", time.Since(start), "err", err)
		if err != nil {
			return fmt.Errorf("lab: connectivity check failed: TCP from %s (%s) to %s (%s) through %s: %w",
				t.Client, srcFor(t, dst), t.Server, dst, t.Router, err)
		}
	}
	return nil
}

func srcFor(t *Topology, dst netip.Addr) netip.Addr {
	if dst.Is6() {
		return t.ClientAddr6
	}
	return t.ClientAddr
}

func (t *Topology) checkTCP(ctx context.Context, dst netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	var ln *net.TCPListener
	lc := net.ListenConfig{KeepAlive: -1}
	if err := inNS(t.handles[RoleServer], func() error {
		l, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(dst, 0).String())
		if err != nil {
			return err
		}
		ln = l.(*net.TCPListener)
		return nil
	}); err != nil {
		return fmt.Errorf("listen in server namespace: %w", err)
	}
	defer ln.Close()
	if err := ln.SetDeadline(deadline); err != nil {
		return err
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			accepted <- fmt.Errorf("server read: %w", err)
			return
		}
		if _, err := c.Write(b[:]); err != nil {
			accepted <- fmt.Errorf("server write: %w", err)
			return
		}
		accepted <- nil
	}()
	// Unblock Accept if ctx is cancelled.
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var c net.Conn
	d := net.Dialer{KeepAlive: -1}
	if err := inNS(t.handles[RoleClient], func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		if ctx.Err() != nil {
			return errors.Join(err, context.Cause(ctx))
		}
		return fmt.Errorf("connect: %w", err)
	}
	// Abort rather than close: no TIME_WAIT socket of the check stays behind to confuse
	// what is observed in the lab afterwards.
	defer func() {
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte{'x'}); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("client read: %w", err)
	}
	if err := <-accepted; err != nil {
		return err
	}
	return nil
}
