#!/usr/bin/env python3
"""Opens COUNT keep-alive HTTP connections to 127.0.0.1:PORT, makes one request on each, keeps
them all open and idle, and prints the rrbalancer master's memory (pid MASTER) while they are.

  idle_clients.py PORT COUNT MASTER
"""
import resource
import selectors
import socket
import sys
import time

port, count, master = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))

request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
socks, answered = [], 0
sel = selectors.DefaultSelector()
deadline = time.time() + 60
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
    # Keep the backlog short: collect answers as we go.
    while len(socks) - answered > 200 and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            key.fileobj.recv(4096)
            sel.unregister(key.fileobj)
            answered += 1
while answered < len(socks) and time.time() < deadline:
    for key, _ in sel.select(timeout=1):
        key.fileobj.recv(4096)
        sel.unregister(key.fileobj)
        answered += 1


def status(field):
    for line in open(f"/proc/{master}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


time.sleep(0.5)
print(f"{answered} of {count} idle keep-alive connections open: master RSS {status('VmRSS')} KiB, "
      f"peak {status('VmHWM')} KiB")
for s in socks:
    s.close()
