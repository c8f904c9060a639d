#!/usr/bin/env python3
"""A rrbalancer worker in plain Python (stdlib only), written from docs/PROTOCOL.md alone.

It answers every HTTP request with "handled by worker <id>, pid <pid>\\n", one thread per
connection. In `rr` mode it receives connections over its channel; in `none` mode it accepts on
the listeners it inherits (LISTEN_FDS) and still uses the channel for ready/stop.

Usage: python_worker.py [--leave-after N] [--no-ack-die] [--garbage] [--never-ack]
                        [--flood MESSAGE] [--leak-mb-per-sec N] [--subscribe]
                        [--messages-log PREFIX] [--never-read] [--send-all N --go FILE]

  --leave-after N  after N requests say `leaving`, finish, and exit 0 (a planned exit)
  --no-ack-die     test aid: exit with code 3 on the first connection without acking it
  --garbage        test aid: send a message that is not part of the protocol after `ready`
  --never-ack      test aid: say `ready`, then never read the channel (a stuck worker)
  --flood MESSAGE  test aid: after `ready`, send MESSAGE (e.g. "ready") over and over
  --leak-mb-per-sec N  test aid: hold N more MB of memory every second, never freed (a leak,
                   for `[recycle] max_memory`)
  --subscribe      take messages: say `subscribe`, keep the retained values (GET /state answers
                   them as JSON), and say `ready` only once `subscribed` has arrived
  --messages-log PREFIX  append each message received to PREFIX-<worker id>-<pid>, one line
                   each: FROM KEY-or-"-" JSON
  --never-read     test aid: say `subscribe` and `ready`, then never read the channel
  --send-all N     test aid: `send all` N messages {"seq": i} once the file named by --go exists
                   (the worker of slot 0)
"""

import argparse
import array
import os
import signal
import socket
import sys
import threading
import time

MAX_MESSAGE = 8192
# A worker that says `subscribe` may be sent `message`s this long.
MAX_RELAY_MESSAGE = 64 * 1024 + 256
MAX_FDS = 64
# After a stop, an idle keep-alive connection is closed only after this long (seconds).
DRAIN_GRACE = 2.0
# A keep-alive connection idle this long is closed (seconds).
IDLE_TIMEOUT = 5.0
# How often a connection waiting for its next request looks at the clock (seconds).
POLL = 0.1


class Channel:
    """The worker's end of the seqpacket channel named by RRB_CHANNEL_FD."""

    def __init__(self):
        fd = int(os.environ["RRB_CHANNEL_FD"])
        self.sock = socket.socket(fileno=fd)
        self.lock = threading.Lock()

    def send(self, text):
        with self.lock:
            self.sock.send(text.encode("utf-8"))

    def recv(self, size=MAX_MESSAGE):
        """One message: (lines, fds). Empty lines means the master closed the channel."""
        fds = array.array("i")
        cmsg_room = socket.CMSG_SPACE(MAX_FDS * fds.itemsize)
        data, ancdata, flags, _ = self.sock.recvmsg(
            size, cmsg_room, socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % fds.itemsize
                fds.frombytes(payload[:usable])
        if flags & socket.MSG_TRUNC:
            raise RuntimeError("truncated message from the master")
        lines = data.decode("utf-8").split("\n")
        if flags & socket.MSG_CTRUNC:
            # Sockets were dropped: we are at our open-file limit, and cannot tell which line
            # each fd that came belongs to. Read none: close them, give the whole message back
            # (`full N`: the master hands it to other workers), and say `idle` once one of our
            # connections has closed (docs/PROTOCOL.md, "Fewer fds than announced").
            for fd in fds:
                os.close(fd)
            head = lines[0].split(" ")
            if head[0] != "conn":
                raise RuntimeError(f"sockets dropped from {lines[0]!r}")
            self.send(f"full {int(head[1])}\n")
            return ["full"], []
        return lines, list(fds)


def raise_fd_limit():
    """Each connection we are sent is an open file: take all the hard limit allows."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Worker:
    def __init__(self, args):
        self.args = args
        self.ident = os.environ.get("RRB_WORKER_ID", "?")
        self.channel = Channel() if "RRB_CHANNEL_FD" in os.environ else None
        self.served = 0
        self.leaving = False
        # Re-entrant: the SIGTERM handler runs on the main thread, which may hold it.
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        # When the stop began (monotonic), for DRAIN_GRACE.
        self.stopped_at = None
        self.threads = []
        # We gave a `conn` back (`full`): say `idle` once a connection of ours closes. After
        # that first `idle` the master hands us connections only after an `idle`: being
        # threaded, we say it after every `conn`.
        self.full = False
        self.pulled = False
        # Retained values by key, as JSON text (--subscribe).
        self.state = {}
        self.messages_log = None
        if args.messages_log:
            path = f"{args.messages_log}-{self.ident}-{os.getpid()}"
            self.messages_log = open(path, "a", encoding="utf-8", buffering=1)

    def log(self, text):
        print(f"python worker {self.ident} pid {os.getpid()}: {text}", file=sys.stderr, flush=True)

    # -- serving -----------------------------------------------------------------------------

    def serve(self, conn):
        """HTTP/1.1 with keep-alive, until the client closes or says close. After a stop, a
        connection keeps being served without a race its client can lose (README, "Keep-alive
        clients"): the request in progress is answered, the next one with `Connection: close`,
        and a connection that stays idle is closed only after DRAIN_GRACE. A connection taken
        is answered at least once, even if the stop came meanwhile."""
        conn.settimeout(POLL)
        buf = b""
        idle_since = time.monotonic()
        answered = False
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        now = time.monotonic()
                        stopped = self.stopped_at
                        if buf:
                            continue
                        if stopped is not None and answered and now - stopped >= DRAIN_GRACE:
                            return
                        if now - idle_since >= IDLE_TIMEOUT:
                            return
                        continue
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > 65536:
                        return
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip().lower()
                version = lines[0].rsplit(" ", 1)[-1]
                keep = headers.get("connection") != "close" and version == "HTTP/1.1"
                with self.lock:
                    self.served += 1
                    leave = (
                        self.args.leave_after
                        and self.served >= self.args.leave_after
                        and not self.leaving
                    )
                    if leave:
                        self.leaving = True
                if leave or self.stopping.is_set():
                    keep = False
                path = lines[0].split(" ")[1] if " " in lines[0] else "/"
                if path == "/state":
                    with self.lock:
                        state = ",".join(f'"{k}":{v}' for k, v in sorted(self.state.items()))
                    body = f'{{"pid":{os.getpid()},"state":{{{state}}}}}\n'.encode()
                else:
                    body = f"handled by worker {self.ident}, pid {os.getpid()}\n".encode()
                reply = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"" if keep else b"Connection: close\r\n")
                    + b"\r\n"
                    + body
                )
                conn.sendall(reply)
                answered = True
                idle_since = time.monotonic()
                if leave and self.channel:
                    self.log(f"served {self.served} requests, leaving")
                    self.channel.send("leaving\n")
                    self.finish_after_leaving()
                if not keep:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def spawn(self, conn):
        def serve_then_free():
            try:
                self.serve(conn)
            finally:
                conn.close()
                with self.lock:
                    free_again, self.full = self.full, False
                    if free_again:
                        self.pulled = True
                if free_again:
                    self.channel.send("idle\n")

        t = threading.Thread(target=serve_then_free, daemon=True)
        t.start()
        with self.lock:
            self.threads = [x for x in self.threads if x.is_alive()] + [t]

    # -- rr: connections arrive over the channel ---------------------------------------------

    def on_message(self, lines):
        """`message FROM [KEY]`, then the JSON."""
        head = lines[0].split(" ")
        key = head[2] if len(head) > 2 else None
        body = "\n".join(lines[1:]).rstrip("\n")
        if key is not None:
            with self.lock:
                self.state[key] = body
        if self.messages_log:
            self.messages_log.write(f"{head[1]} {key or '-'} {body}\n")

    def run_channel(self):
        size = MAX_RELAY_MESSAGE if self.args.subscribe else MAX_MESSAGE
        while True:
            lines, fds = self.channel.recv(size)
            if not lines or lines == [""] or lines[0] == "stop":
                return
            if lines[0].startswith("message "):
                self.on_message(lines)
                continue
            if lines[0] == "subscribed":
                continue
            if lines[0] == "full":
                with self.lock:
                    if not self.full:
                        self.log("at the open-file limit: connections given back until one closes")
                    self.full = True
                continue
            head = lines[0].split(" ")
            if head[0] != "conn" or int(head[1]) != len(fds):
                self.log(f"unexpected message {lines!r}")
                return
            if self.args.no_ack_die:
                self.log("dying without acking, as asked")
                os._exit(3)
            self.channel.send(f"ack {len(fds)}\n")
            for fd in fds:
                self.spawn(socket.socket(fileno=fd))
            with self.lock:
                pulled = self.pulled
            if pulled:
                self.channel.send("idle\n")

    def finish_after_leaving(self):
        """The master sends nothing new after `leaving`: take what is already on its way
        (the main loop keeps acking), finish every connection, then exit."""

        def wait_and_exit():
            while True:
                time.sleep(0.1)
                with self.lock:
                    busy = [t for t in self.threads if t.is_alive()]
                if not busy:
                    os._exit(0)
                for t in busy:
                    t.join(timeout=5.0)

        threading.Thread(target=wait_and_exit, daemon=True).start()

    def send_all(self):
        while not os.path.exists(self.args.go):
            time.sleep(0.01)
        for i in range(self.args.send_all):
            self.channel.send(f'send all\n{{"seq":{i}}}')
        self.log(f"sent {self.args.send_all} messages")

    def flood(self):
        """Sends the same message until the master closes the channel."""
        message = self.args.flood + "\n"
        try:
            while not self.stopping.is_set():
                self.channel.send(message)
        except OSError:
            pass

    # -- none: accept on the inherited listeners ---------------------------------------------

    def run_listeners(self):
        count = int(os.environ.get("LISTEN_FDS", "0"))
        self.acceptors = []
        for i in range(count):
            listener = socket.socket(fileno=3 + i)
            # Wakes up now and then to see whether we stop, so that no connection is taken
            # from the kernel's queue just as the process exits.
            listener.settimeout(0.1)
            t = threading.Thread(target=self.accept_loop, args=(listener,), daemon=True)
            t.start()
            self.acceptors.append(t)

    def accept_loop(self, listener):
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.spawn(conn)

    def drain(self):
        # First no more accepts (what was taken is being served), then every connection.
        for t in getattr(self, "acceptors", []):
            t.join(timeout=1.0)
        with self.lock:
            threads = list(self.threads)
        for t in threads:
            t.join(timeout=5.0)

    def begin_stop(self):
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self.stopping.set()

    def main(self):
        def on_term(*_):
            self.begin_stop()
            self.drain()
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
        if os.environ.get("LISTEN_PID") == str(os.getpid()):
            self.run_listeners()
        if self.channel is None:
            self.stopping.wait()
            return
        if self.args.subscribe or self.args.never_read:
            self.channel.send("subscribe\n")
        if self.args.never_read:
            self.channel.send("ready\n")
            self.log("never reading the channel, as asked")
            self.stopping.wait()
            return
        if self.args.subscribe:
            # The retained values come first, then `subscribed`: ready with the current state.
            while True:
                lines, _ = self.channel.recv(MAX_RELAY_MESSAGE)
                if not lines or lines == [""]:
                    return
                if lines[0] == "subscribed":
                    break
                if lines[0].startswith("message "):
                    self.on_message(lines)
        self.channel.send("ready\n")
        if self.args.send_all and self.ident == "0":
            threading.Thread(target=self.send_all, daemon=True).start()
        if self.args.garbage:
            self.channel.send("hello garbage\n")
        if self.args.never_ack:
            self.log("never acking, as asked")
            self.stopping.wait()
            return
        if self.args.flood:
            threading.Thread(target=self.flood, daemon=True).start()
        self.run_channel()
        self.begin_stop()
        self.drain()


def main():
    raise_fd_limit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leave-after", type=int, default=0, metavar="N")
    parser.add_argument("--no-ack-die", action="store_true")
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--never-ack", action="store_true")
    parser.add_argument("--flood", metavar="MESSAGE")
    parser.add_argument("--leak-mb-per-sec", type=int, default=0, metavar="N")
    parser.add_argument("--subscribe", action="store_true")
    parser.add_argument("--messages-log", metavar="PREFIX")
    parser.add_argument("--never-read", action="store_true")
    parser.add_argument("--send-all", type=int, default=0, metavar="N")
    parser.add_argument("--go", metavar="FILE")
    args = parser.parse_args()
    if args.leak_mb_per_sec:
        threading.Thread(target=leak, args=(args.leak_mb_per_sec,), daemon=True).start()
    Worker(args).main()


def leak(mb_per_sec):
    """Holds `mb_per_sec` more MB each second, written so that it is resident."""
    hoard = []
    while True:
        hoard.append(b"\x01" * (mb_per_sec * 1000 * 1000))
        time.sleep(1)


if __name__ == "__main__":
    main()
