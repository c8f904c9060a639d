#!/usr/bin/env python3
"""An rrbalancer agent ([agent] in the config), written from docs/PROTOCOL.md alone: it serves
no connection; it watches a file and broadcasts its content to every worker as a retained value,
so that a worker started later (a restart, a reload, a scale-up) gets the current value before
its first connection.

usage: agent.py --watch FILE [--key KEY] [--interval MS]
                [--count N --go FILE] [--messages-log FILE]

  --watch FILE      the file to watch; its content (JSON as it is, other text as a JSON string)
                    is sent as `send all KEY` whenever it changes, and once before `ready`
  --key KEY         the retained key (default: config)
  --interval MS     how often the file is looked at (default: 200)
  --count N         test aid: `send all` N messages {"seq": i} once the file named by --go exists
  --messages-log F  test aid: append each message received (from workers) to F

The first `send` goes before `ready`: the master starts the workers only once the agent is
ready, so they start with the value already retained.
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

MAX_BODY = 64 * 1024
MAX_MESSAGE = MAX_BODY + 256


def log(text):
    print(f"agent pid {os.getpid()}: {text}", file=sys.stderr, flush=True)


class Agent:
    def __init__(self, args):
        self.args = args
        self.sock = socket.socket(fileno=int(os.environ["RRB_CHANNEL_FD"]))
        self.lock = threading.Lock()
        self.last = None
        self.messages_log = open(args.messages_log, "a", buffering=1) if args.messages_log else None

    def send(self, text):
        with self.lock:
            self.sock.send(text.encode("utf-8"))

    def read_value(self):
        """The file's content as compact JSON, or None if it cannot be read."""
        try:
            with open(self.args.watch, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = text.rstrip("\n")
        return json.dumps(value, separators=(",", ":"))

    def publish(self):
        body = self.read_value()
        if body is None or body == self.last:
            return
        if len(body.encode("utf-8")) > MAX_BODY:
            log(f"{self.args.watch}: {len(body)} bytes, over the {MAX_BODY}-byte bound; not sent")
            return
        self.last = body
        self.send(f"send all {self.args.key}\n{body}")
        log(f"sent {self.args.key} ({len(body)} bytes)")

    def watch(self):
        while True:
            time.sleep(self.args.interval / 1000)
            self.publish()

    def send_count(self):
        while not os.path.exists(self.args.go):
            time.sleep(0.01)
        for i in range(self.args.count):
            self.send(f'send all\n{{"seq":{i}}}')
        log(f"sent {self.args.count} messages")

    def read_channel(self):
        """Until `stop` or the channel closes: messages from workers are logged."""
        while True:
            data = self.sock.recv(MAX_MESSAGE)
            lines = data.decode("utf-8").split("\n")
            if not data or lines[0] == "stop":
                return
            if lines[0].startswith("message ") and self.messages_log:
                self.messages_log.write(f"{lines[0]} {lines[1]}\n")

    def main(self):
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        self.send("subscribe\n")
        if self.args.watch:
            self.publish()
        self.send("ready\n")
        if self.args.watch:
            threading.Thread(target=self.watch, daemon=True).start()
        if self.args.count:
            threading.Thread(target=self.send_count, daemon=True).start()
        self.read_channel()
        log("stopping")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watch", metavar="FILE")
    parser.add_argument("--key", default="config")
    parser.add_argument("--interval", type=int, default=200, metavar="MS")
    parser.add_argument("--count", type=int, default=0, metavar="N")
    parser.add_argument("--go", metavar="FILE")
    parser.add_argument("--messages-log", metavar="FILE")
    args = parser.parse_args()
    if "RRB_CHANNEL_FD" not in os.environ:
        sys.exit("agent.py runs under rrbalancer ([agent] exec), which gives it RRB_CHANNEL_FD")
    Agent(args).main()


if __name__ == "__main__":
    main()
