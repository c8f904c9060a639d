#!/usr/bin/env python3
"""Opens COUNT keep-alive HTTP connections to 127.0.0.1:PORT from the source address SRC (any
127.x.y.z: each has its own ephemeral ports), makes one request on each, reads every answer,
says so, and holds them all open for HOLD seconds. scripts/many_clients.sh runs several.

  hold_clients.py PORT COUNT SRC HOLD
"""
import selectors, socket, sys, time, resource
port, count, src, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
req = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
sel = selectors.DefaultSelector(); socks = []; answered = 0; errors = 0; first_error = None
t0 = time.time()
for i in range(count):
    try:
        s = socket.socket(); s.bind((src, 0)); s.connect(("127.0.0.1", port)); s.sendall(req)
    except OSError as e:
        errors += 1
        first_error = first_error or str(e)
        continue
    s.setblocking(False); sel.register(s, selectors.EVENT_READ); socks.append(s)
    while len(socks) - answered > 500:
        for k, _ in sel.select(timeout=2):
            if k.fileobj.recv(4096): answered += 1
            sel.unregister(k.fileobj)
while answered < len(socks) and time.time() - t0 < 120:
    ev = sel.select(timeout=2)
    if not ev: break
    for k, _ in ev:
        if k.fileobj.recv(4096): answered += 1
        sel.unregister(k.fileobj)
print(f"{src}: {len(socks)} open, {answered} answered, {errors} errors"
      f"{f' (first: {first_error})' if first_error else ''}, {time.time()-t0:.1f}s", flush=True)
time.sleep(hold)
