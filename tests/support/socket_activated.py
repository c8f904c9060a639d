#!/usr/bin/env python3
"""A plain systemd-style socket-activated HTTP server for the tests.

It knows nothing of rrbalancer: it reads only LISTEN_FDS / LISTEN_PID (fd 3 onward), as any
socket-activation server does, and answers "socket-activated pid <pid>". It exits on SIGTERM.
"""
import os
import signal
import socket
import sys
import threading

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    sys.exit("LISTEN_PID is not my pid: not socket-activated")
count = int(os.environ["LISTEN_FDS"])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def serve(listener):
    while True:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = f"socket-activated pid {os.getpid()}\n".encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )


threads = [
    threading.Thread(target=serve, args=(socket.socket(fileno=3 + i),), daemon=True)
    for i in range(count)
]
for t in threads:
    t.start()
for t in threads:
    t.join()
