#!/usr/bin/env python3
"""The sweep's end-to-end client: connects, sends a request line 100 ms later (the
server is then waiting for it: a reset reaches it mid-request), closes its sending side
200 ms after that (half-close: it has nothing more to say), reads the response (2 s at
most) and closes. Exit 0 with the response, 1 with the error."""
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=3.0)
    time.sleep(0.1)
    s.sendall(b"request\n")
    time.sleep(0.2)
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
