#!/usr/bin/env python3
"""The soak's driver (started by scripts/soak.sh, which builds the binary and cleans up after it).

Starts a master with 4 demo workers on a loopback port, runs two wrk loads against it for the whole
run (one with `Connection: close`, one keep-alive) and, from a seeded generator, injects faults at
random: SIGKILL of a worker, SIGSTOP then SIGCONT of one, `reload`, `scale N` (2 to 6), `upgrade`.
Every 10 s it prints the master's RSS, its fd count and its live workers; at the end the requests
and errors of both loads by kind, the faults by kind, and any process of the run still alive after
`stop` (each is killed). Exits 1 if the master died, did not serve a fresh client after the load,
or left a process behind.

The seed decides the whole fault sequence (each step's delay, kind, victim rank, stop length and
worker count are drawn whatever happened before), so `SOAK_SEED=<seed>` replays it; which pid a
rank names depends on the run. Stdlib only.
"""

import argparse
import http.client
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

KINDS = ("kill", "stop", "reload", "scale", "upgrade")
SAMPLE_EVERY = 10.0
# No fault in the first and last seconds: the load starts on a settled master, and the end shows
# what the master looks like once the faults stop.
QUIET_START = 5.0
QUIET_END = 10.0
COMMAND_TIMEOUT = 60.0


def log(line):
    print(line, flush=True)


def alive(pid):
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def marked(marker):
    """Live processes whose environment carries the run's marker (the master passes its
    environment to its workers and to the master an upgrade starts)."""
    needle = f"RRB_SOAK={marker}\0".encode()
    found = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read() and alive(pid):
                    found.append(pid)
        except OSError:
            pass
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class Run:
    def __init__(self, args):
        self.args = args
        self.env = dict(os.environ, RRB_SOAK=args.marker)
        self.env.pop("RRB_SCHED_POLICY", None)
        self.env.pop("NODE_CLUSTER_SCHED_POLICY", None)
        self.faults = Counter()
        self.failed = Counter()  # control commands that did not succeed, by kind
        self.failures = []  # their first messages
        self.samples = []  # (rss_kb, fds)
        self.masters = []  # every master pid seen, in order
        self.problems = []
        self.wanted = 4
        self.stopped = {}  # workers SIGSTOPped and not yet continued: their SIGCONT timers
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.t0 = time.monotonic()

    # ---- the master ---------------------------------------------------------------------------

    def rrb(self, *words, timeout=COMMAND_TIMEOUT):
        """`rrbalancer --config FILE words…`: (exit code, output); 124 on timeout."""
        try:
            out = subprocess.run(
                [self.args.bin, "--config", self.args.config, *words],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            return out.returncode, (out.stdout + out.stderr).strip()
        except subprocess.TimeoutExpired:
            return 124, f"no answer within {timeout:.0f} s"

    def master_pid(self):
        """The master the pid file names, if it runs (an upgrade renames the new one's into
        place atomically: a live master is named at every moment)."""
        for _ in range(2):
            try:
                with open(self.args.pid_file) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                pid = None
            if pid and alive(pid):
                with self.lock:
                    if not self.masters or self.masters[-1] != pid:
                        self.masters.append(pid)
                return pid
            time.sleep(0.2)
        return None

    def workers(self, master):
        return sorted(p for p in all_pids() if ppid_of(p) == master and alive(p))

    def start_master(self):
        self.master_log = open(self.args.log, "ab")
        proc = subprocess.Popen(
            [self.args.bin, "--config", self.args.config, "run"],
            env=dict(self.env, RUST_LOG="info"),
            stdin=subprocess.DEVNULL,
            stdout=self.master_log,
            stderr=self.master_log,
            start_new_session=True,
        )
        self.record_group(proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit(f"the master exited at start ({proc.returncode}); see its log")
            if self.rrb("status", "--ready", timeout=5)[0] == 0:
                return proc
            time.sleep(0.2)
        sys.exit("the master was not ready within 30 s")

    def record_group(self, pgid):
        """soak.sh kills every group recorded here if this driver dies."""
        with open(self.args.groups, "a") as f:
            f.write(f"{pgid}\n")

    # ---- load ---------------------------------------------------------------------------------

    def start_load(self):
        url = f"http://{self.args.addr}/"
        common = ["wrk", "-t1", f"-c{self.args.conns}", f"-d{self.args.seconds}s"]
        common += ["--timeout", "5s"]
        self.loads = {}
        for name, extra in (("close", ["-H", "Connection: close"]), ("keep-alive", [])):
            out = open(os.path.join(self.args.tmp, f"wrk-{name}.txt"), "w")
            proc = subprocess.Popen(
                common + extra + [url],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.record_group(proc.pid)
            self.loads[name] = (proc, out)

    def wait_load(self):
        results = {}
        for name, (proc, out) in self.loads.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.problems.append(f"wrk ({name}) did not end on time: killed")
            out.close()
            with open(out.name) as f:
                results[name] = parse_wrk(f.read())
        return results

    # ---- faults -------------------------------------------------------------------------------

    def inject(self, rng, end):
        """The seeded fault sequence, until `end` (seconds since the start)."""
        step = 0
        next_at = QUIET_START
        while True:
            # Every number of a step is drawn, whatever it turns out to need: the sequence
            # depends on the seed alone.
            delay = rng.uniform(2.0, 8.0)
            kind = rng.choice(KINDS)
            rank = rng.random()
            stop_for = rng.uniform(0.5, 4.0)
            count = rng.randint(2, 6)
            if self.wait_until(next_at) or next_at > end:
                return
            step += 1
            self.fault(step, kind, rank, stop_for, count)
            next_at = max(next_at + delay, self.elapsed())

    def fault(self, step, kind, rank, stop_for, count):
        master = self.master_pid()
        if master is None:
            return
        at = f"[{self.elapsed():5.1f}s] #{step} {kind}"
        if kind in ("kill", "stop"):
            workers = [w for w in self.workers(master) if w not in self.stopped]
            if not workers:
                self.note(at, "no worker to pick")
                return
            victim = workers[int(rank * len(workers))]
            try:
                os.kill(victim, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
            except ProcessLookupError:
                self.note(at, f"worker {victim} exited first")
                return
            if kind == "kill":
                self.note(at, f"SIGKILL worker {victim}")
            else:
                timer = threading.Timer(stop_for, self.resume, (victim,))
                with self.lock:
                    self.stopped[victim] = timer
                timer.start()
                self.note(at, f"SIGSTOP worker {victim} for {stop_for:.1f} s")
            self.faults[kind] += 1
            return
        words = {"reload": ["reload"], "scale": ["scale", str(count)], "upgrade": ["upgrade"]}[kind]
        code, said = self.rrb(*words)
        self.faults[kind] += 1
        if code == 0:
            if kind == "scale":
                self.wanted = count
            self.note(at, f"{' '.join(words)}: ok")
        else:
            self.failed[kind] += 1
            first = said.splitlines()[-1] if said else ""
            self.failures.append(f"{' '.join(words)} (exit {code}): {first}")
            self.note(at, f"{' '.join(words)}: exit {code}: {first}")

    def resume(self, pid):
        with self.lock:
            if self.stopped.pop(pid, None) is None:
                return
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def resume_all(self):
        with self.lock:
            stopped = dict(self.stopped)
        for pid, timer in stopped.items():
            timer.cancel()
            self.resume(pid)

    def note(self, at, what):
        if self.args.verbose:
            log(f"{at}: {what}")

    # ---- sampling -----------------------------------------------------------------------------

    def sample(self):
        master = self.master_pid()
        if master is None:
            if not any(p.startswith("no master running") for p in self.problems):
                self.problems.append(f"no master running from {self.elapsed():.0f} s on")
            log(f"[{self.elapsed():4.0f}s] NO MASTER RUNNING")
            return
        try:
            with open(f"/proc/{master}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{master}/fd"))
        except (OSError, StopIteration, ValueError):
            return
        self.samples.append((rss, fds))
        faults = sum(self.faults.values())
        workers = len(self.workers(master))
        log(
            f"[{self.elapsed():4.0f}s] master pid {master}: RSS {rss / 1024:.1f} MiB, {fds} fds; "
            f"{workers} live workers (wanted {self.wanted}); {faults} faults so far"
        )

    def sampler(self):
        """Every 10 s until the end (whose sample the main thread takes)."""
        n = 1
        while n * SAMPLE_EVERY < self.args.seconds and not self.wait_until(n * SAMPLE_EVERY):
            self.sample()
            n += 1

    def elapsed(self):
        return time.monotonic() - self.t0

    def wait_until(self, t):
        """Sleeps until `t` seconds since the start; True if the run is over meanwhile."""
        return self.done.wait(max(0.0, t - self.elapsed()))

    # ---- the end ------------------------------------------------------------------------------

    def fresh_client(self):
        """A new client is served within 5 s of the load stopping."""
        host, port = self.args.addr.rsplit(":", 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=2)
                conn.request("GET", "/", headers={"Connection": "close"})
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def stop_and_sweep(self):
        """`rrbalancer stop`, then every process of the run still alive: reported and killed."""
        code, said = self.rrb("stop", timeout=60)
        if code != 0:
            self.problems.append(f"stop: exit {code}: {said[-300:]}")
        deadline = time.monotonic() + 5
        while (left := marked(self.args.marker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        found = [(pid, cmdline(pid)) for pid in left]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Every group recorded is gone now: soak.sh need not (and must not, pids being reused)
        # signal them again.
        open(self.args.groups, "w").close()
        return found


def parse_wrk(text):
    """Requests and errors by kind from wrk's report."""

    def number(pattern):
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0

    result = {
        "requests": number(r"(\d+) requests in"),
        "connect": number(r"connect (\d+)"),
        "read": number(r"read (\d+)"),
        "write": number(r"write (\d+)"),
        "timeout": number(r"timeout (\d+)"),
        "non-2xx/3xx": number(r"Non-2xx or 3xx responses: (\d+)"),
    }
    if not re.search(r"\d+ requests in", text):
        result["broken"] = text.strip()[-300:]
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--pid-file", required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--groups", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--marker", required=True)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.seconds = max(20, int(args.minutes * 60))

    run = Run(args)
    log(
        f"soak: {args.seconds} s on {args.addr}, 4 demo workers, seed {args.seed} "
        f"(SOAK_SEED={args.seed} replays this fault sequence)"
    )
    first = run.start_master()
    run.master_pid()
    run.t0 = time.monotonic()
    run.start_load()
    sampler = threading.Thread(target=run.sampler, daemon=True)
    sampler.start()
    try:
        run.inject(random.Random(args.seed), args.seconds - QUIET_END)
        run.wait_until(args.seconds)
        run.sample()
    finally:
        run.done.set()
        run.resume_all()
    loads = run.wait_load()
    sampler.join(timeout=5)

    served = run.fresh_client()
    if not served:
        run.problems.append("no fresh client served within 5 s of the load stopping")
    if run.master_pid() is None:
        run.problems.append("no master running at the end")
    left = run.stop_and_sweep()
    try:
        first.wait(timeout=5)  # reaped (killed by the sweep if it was still there)
    except subprocess.TimeoutExpired:
        pass
    run.master_log.close()

    log("")
    log(f"== soak done: {args.seconds} s, seed {args.seed}")
    for name, r in loads.items():
        kinds = ("connect", "read", "write", "timeout", "non-2xx/3xx")
        errors = ", ".join(f"{k} {r[k]:,}" for k in kinds)
        log(f"load {name:10}: {r['requests']:,} requests; errors: {errors}")
        if "broken" in r:
            run.problems.append(f"wrk ({name}) gave no report: {r['broken']}")
    kinds = ", ".join(f"{k} {run.faults[k]}" for k in KINDS)
    log(f"faults injected: {sum(run.faults.values())} ({kinds})")
    if run.failed:
        log(f"control commands that failed: {dict(run.failed)}")
        for f in run.failures[:10]:
            log(f"  {f}")
    if run.samples:
        rss = [s[0] / 1024 for s in run.samples]
        fds = [s[1] for s in run.samples]
        log(
            f"master: RSS {min(rss):.1f}–{max(rss):.1f} MiB, fds {min(fds)}–{max(fds)} over "
            f"{len(run.samples)} samples; pids {' → '.join(map(str, run.masters))}"
        )
    log(f"fresh client after the load: {'served' if served else 'NOT SERVED'}")
    if left:
        log(f"leftover processes: {len(left)} (killed)")
        for pid, cmd in left:
            log(f"  {pid} {cmd}")
        run.problems.append(f"{len(left)} process(es) left after stop")
    else:
        log("leftover processes: none")
    for problem in run.problems:
        log(f"PROBLEM: {problem}")
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
