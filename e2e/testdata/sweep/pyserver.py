#!/usr/bin/env python3
"""A small line server for the sweep's end-to-end test: it reads a request line, answers
it, waits (1 s at most) for the client to close, and closes. With --bug halfclose it has one
planted bug: when the client has already closed its side (half-close) by the time the
request is read, it forgets close() and the connection stays in CLOSE_WAIT."""
import argparse
import select
import socket
import sys
import threading

leaked = []  # what the bug forgot to close, kept from the garbage collector


def serve(conn, bug):
    conn.settimeout(5.0)
    try:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                print("request: EOF before a line", flush=True)
                conn.close()
                return
            data += chunk
        if bug == "halfclose":
            readable, _, _ = select.select([conn], [], [], 0)
            if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                # The client closed its side before the response.
                leaked.append(conn)  # the bug: no conn.close()
                return
        conn.sendall(b"response to " + data)
        conn.settimeout(1.0)
        while conn.recv(4096):
            pass
    except OSError as e:
        print("connection:", e, flush=True)
    conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bug", default="none", choices=["none", "halfclose"])
    a = p.parse_args()
    ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ln.bind((a.host, a.port))
    ln.listen(64)
    print("listening on", a.host, a.port, flush=True)
    while True:
        conn, _ = ln.accept()
        threading.Thread(target=serve, args=(conn, a.bug), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
