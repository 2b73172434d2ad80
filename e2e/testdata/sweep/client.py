#!/usr/bin/env python3
"""The sweep's end-to-end client: sends a request line, closes its sending side 50 ms
later (half-close: it has nothing more to say), reads the response (2 s at most) and
closes. Exit 0 with the response, 1 with the error."""
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=3.0)
    s.sendall(b"request\n")
    time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(2.0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("EOF before the response")
        data += chunk
    s.close()
    print("got", data.decode().strip())
except OSError as e:
    print("error:", e)
    sys.exit(1)
