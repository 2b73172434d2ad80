// Command goserver is a small line server for the sweep's end-to-end test: it reads a
// request line, answers it, waits (1 s at most) for the client to close, and closes.
// With -bug reset it has one planted bug: when the peer resets the connection before
// the request is read whole, it forgets close() (the connection is kept, as a leaked
// handle would be).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

var (
	mu     sync.Mutex
	leaked []net.Conn // what the bug forgot to close, kept from the garbage collector
)

func main() {
	listen := flag.String("listen", "", "address:port to listen on")
	bug := flag.String("bug", "none", "none, or reset: forget close() when the peer resets mid-request")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			continue
		}
		go serve(c, *bug)
	}
}

func serve(c net.Conn, bug string) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		fmt.Println("request:", err)
		if bug == "reset" && errors.Is(err, syscall.ECONNRESET) {
			mu.Lock()
			leaked = append(leaked, c) // the bug: no c.Close()
			mu.Unlock()
			return
		}
		c.Close()
		return
	}
	if _, err := fmt.Fprintf(c, "response to %s", line); err != nil {
		fmt.Println("response:", err)
		c.Close()
		return
	}
	// The client closes after the response: wait for its FIN, 1 s at most.
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.Copy(io.Discard, r); err != nil {
		fmt.Println("after the response:", err)
	}
	c.Close()
}
