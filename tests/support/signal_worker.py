"""A native-protocol worker that notes, in the file MARK, each message the master sends it and
each stop signal it gets, in the order the master sent them.

It says `ready` (unless SILENT is set: then it speaks no protocol, like a plain program), and
exits 0 on `stop` — or, with WAIT_SIGNAL set, only on SIGUSR2 or SIGTERM. The signals are
blocked and taken with sigtimedwait between reads, and on a signal the messages already sent
are read first: a message the master sent before the signal is always noted before it.
"""
import os
import signal
import socket

SIGNALS = {signal.SIGUSR2, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
ch = socket.socket(fileno=int(os.environ["RRB_CHANNEL_FD"]))
mark = os.open(os.environ["MARK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
wait_signal = bool(os.environ.get("WAIT_SIGNAL"))


def note(line):
    os.write(mark, (line + "\n").encode())


def read_one():
    """A message, or None when none is waiting."""
    try:
        m = ch.recv(65536)
    except (BlockingIOError, socket.timeout):
        return None
    note(f"message {m.decode().strip()}" if m else "channel closed")
    if not m or (m.startswith(b"stop") and not wait_signal):
        os._exit(0)
    return m


if not os.environ.get("SILENT"):
    ch.send(b"ready")
else:
    # No `ready` to say: a file says the signals are taken from now on (the test waits for it,
    # so that its SIGTERM does not come before the mask, while Python is still starting).
    open(os.environ["MARK"] + ".up", "w").close()
ch.settimeout(0.01)
while True:
    read_one()
    got = signal.sigtimedwait(SIGNALS, 0)
    if got:
        ch.setblocking(False)
        while read_one() is not None:
            pass
        note(f"signal {signal.Signals(got.si_signo).name}")
        os._exit(0)
