#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: parse wrk output, compute fairness, print the results table,
draw the chart. Standard library only.

  report.py parse NAME SCENARIO RUN < wrk-output      -> one TSV row
  report.py fairness WORKERS < wrk-output-with-count.lua  -> busiest/idlest ratio
  report.py table RAW.tsv META.tsv                    -> the markdown tables
  report.py windows RAW.tsv META.tsv                  -> the window sweep's table
  report.py plot RAW.tsv OUT.png                      -> bar chart of the ratios (gnuplot)

RAW.tsv rows (from parse): contender scenario run rate total p50 p90 p99 p99.9 errors, the
latencies in ms. META.tsv rows (from bench.sh): contender scenario run fairness rss cpu.
"""
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
PERCENTILES = ("50", "90", "99", "99.9")


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse(name, scenario, run):
    text = sys.stdin.read()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    # bench/latency.lua's line, in microseconds; else wrk's own --latency table (no p90/p99.9).
    lua = re.search(r"^latency_us (.*)$", text, re.M)
    pct = {}
    if lua:
        pct = {k: int(v) / 1000 for k, v in re.findall(r"p([\d.]+)=(\d+)", lua.group(1))}
    else:
        for p in ("50", "90", "99"):
            m = re.search(rf"^\s+{p}%\s+(\S+)", text, re.M)
            if m:
                pct[p] = ms(m.group(1))
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    if not rate:
        errors = max(errors, 1)
    row = [name, scenario, run,
           rate.group(1) if rate else "0",
           total.group(1) if total else "0",
           *(f"{pct[p]:.3f}" if p in pct else "nan" for p in PERCENTILES),
           str(errors)]
    print("\t".join(row))


def fairness(workers):
    text = sys.stdin.read()
    m = re.search(r"^workers(.*)$", text, re.M)
    counts = [int(c) for c in re.findall(r"=(\d+)", m.group(1))] if m else []
    if len(counts) < workers or min(counts) == 0:
        print(f"only {len(counts)} of {workers} served")
    else:
        print(f"{max(counts) / min(counts):.3f}")


TARGETS = {
    # (contender, scenario): (min ratio to reference, max p99 vs reference, max busiest/idlest)
    ("rrb-rr", "close"): (0.90, 1.5, 1.05),
    ("rrb-none", "close"): (0.97, None, None),
    ("rrb-none", "keepalive"): (0.97, None, None),
    ("rrb-rr", "keepalive"): (0.98, None, None),
}
# Uneven work, native workers: rr against rrb none (min req/s ratio, max p99 ratio), and p50
# and p90 below the SO_REUSEPORT reference's.
UNEVEN_NATIVE = (0.95, 1.1)
# Node workers under rrbalancer against Node's own rr primary, per scenario:
# (min req/s ratio, max p99 ratio).
NODE_TARGETS = {"close": (1.05, 1.0), "uneven": (1.0, 1.0)}
NODE_CONTENDERS = ("rrb-node-cluster", "rrb-node")
WINDOW = re.compile(r"rrb-rr-w(\d+)$")


def load(raw_path, meta_path):
    """The runs of each (contender, scenario), and their metadata, in the order first seen."""
    rows = defaultdict(list)
    for line in open(raw_path):
        name, scenario, run, rate, total, p50, p90, p99, p999, errors = \
            line.rstrip("\n").split("\t")
        rows[(name, scenario)].append(
            dict(rate=float(rate), total=int(total), p50=float(p50), p90=float(p90),
                 p99=float(p99), p999=float(p999), errors=int(errors)))
    meta = defaultdict(list)
    for line in open(meta_path):
        name, scenario, run, fair, rss, cpu = line.rstrip("\n").split("\t")
        meta[(name, scenario)].append(dict(fair=fair, rss=rss, cpu=cpu))
    return rows, meta


class Results:
    def __init__(self, raw_path, meta_path):
        self.rows, self.meta = load(raw_path, meta_path)

    def med(self, key, field):
        runs = self.rows.get(key)
        return statistics.median(r[field] for r in runs) if runs else float("nan")

    def ratio(self, key, other, field):
        """Median of `key` ÷ median of `other` (same run set), nan when either is missing."""
        a, b = self.med(key, field), self.med(other, field)
        return a / b if b == b and b > 0 else float("nan")

    def errors(self, key):
        return sum(r["errors"] for r in self.rows.get(key, []))

    def fair(self, key):
        m = self.meta.get(key, [])
        return m[0]["fair"] if m else "-"

    def spread_ok(self, key, most):
        try:
            return float(self.fair(key)) <= most
        except ValueError:
            return False


def num(x, fmt=".2f"):
    """A figure for a table cell: "-" when it could not be computed (nan)."""
    return format(x, fmt) if x == x else "-"


def verdict(ok, text):
    return ("PASS " if ok else "MISS ") + text


def uneven_native(res, key):
    """The native uneven-work target for rrb-rr (or one of its windows), as PASS/MISS text."""
    none, ref = ("rrb-none", "uneven"), ("reference", "uneven")
    if none not in res.rows or ref not in res.rows:
        return "? needs rrb-none and reference in the same run"
    lo, p99_max = UNEVEN_NATIVE
    x, p99x = res.ratio(key, none, "rate"), res.ratio(key, none, "p99")
    p50x, p90x = res.ratio(key, ref, "p50"), res.ratio(key, ref, "p90")
    ok = x >= lo and p99x <= p99_max and p50x < 1 and p90x < 1 and res.errors(key) == 0
    return verdict(ok, f"{x:.2f}× rrb-none (≥{lo}×), p99 {p99x:.2f}× (≤{p99_max}×); "
                       f"p50 {p50x:.2f}×, p90 {p90x:.2f}× ref (<1)")


def targets(res, key):
    """The issue's targets that apply to one (contender, scenario), as PASS/MISS texts."""
    name, scenario = key
    out = []
    errors_ok = res.errors(key) == 0
    target = TARGETS.get(key)
    if target and ("reference", scenario) not in res.rows:
        out.append("? needs the reference in the same run")
    elif target:
        lo, p99_max, fair_max = target
        ratio = res.ratio(key, ("reference", scenario), "rate")
        ok = ratio >= lo and errors_ok
        text = f"{ratio:.2f}× ref (≥{lo:.2f}×)"
        if p99_max:
            p99x = res.ratio(key, ("reference", scenario), "p99")
            ok = ok and p99x <= p99_max
            text += f", p99 {p99x:.2f}× (≤{p99_max}×)"
        if fair_max:
            ok = ok and res.spread_ok(key, fair_max)
            text += f", spread {res.fair(key)} (≤{fair_max})"
        out.append(verdict(ok, text))
    if name == "rrb-rr" and scenario == "uneven":
        out.append(uneven_native(res, key))
    if name == "rrb-rr-metrics" and scenario == "close":
        # Issue 14: metrics on and scraped every second cost (almost) nothing.
        plain = ("rrb-rr", scenario)
        if plain not in res.rows:
            out.append("? needs rrb-rr in the same run")
        else:
            ratio = res.ratio(key, plain, "rate")
            out.append(verdict(ratio >= 0.98 and errors_ok, f"{ratio:.2f}× rrb-rr (≥0.98×)"))
    if name == "rrb-rr-apps" and scenario in ("close", "keepalive"):
        # Issue 29: one app beside two idle ones costs what it costs alone.
        plain = ("rrb-rr", scenario)
        if plain not in res.rows:
            out.append("? needs rrb-rr in the same run")
        else:
            ratio = res.ratio(key, plain, "rate")
            cpu, cpu_alone = cpu_per_100k(res, key), cpu_per_100k(res, plain)
            known = cpu == cpu and cpu_alone == cpu_alone and cpu_alone > 0
            cpu_x = cpu / cpu_alone if known else float("nan")
            ok = ratio >= 0.95 and errors_ok and (not known or cpu_x <= 1.05)
            out.append(verdict(ok, f"{ratio:.2f}× rrb-rr (≥0.95×), master CPU {num(cpu_x)}× "
                                   f"rrb-rr's (≤1.05×)"))
    if name in NODE_CONTENDERS and scenario in NODE_TARGETS:
        lo, p99_max = NODE_TARGETS[scenario]
        node = ("node-rr", scenario)
        if node not in res.rows:
            out.append("? needs node-rr in the same run")
        else:
            x, p99x = res.ratio(key, node, "rate"), res.ratio(key, node, "p99")
            ok = x >= lo and p99x <= p99_max and errors_ok
            out.append(verdict(ok, f"{x:.2f}× Node's rr primary (≥{lo}×), p99 {p99x:.2f}× "
                                   f"(≤{p99_max}×)"))
    return out


def table(raw_path, meta_path):
    res = Results(raw_path, meta_path)
    rows, meta = res.rows, res.meta
    out = ["| contender | scenario | req/s | × reference | p50 ms | p90 ms | p99 ms | p99.9 ms "
           "| busiest/idlest | errors | master peak RSS | master CPU s /100k conns | target |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in rows:
        name, scenario = key
        if WINDOW.match(name):
            continue  # the window sweep has its own table
        rate = res.med(key, "rate")
        ratio = res.ratio(key, ("reference", scenario), "rate")
        m = meta.get(key, [])
        rss = max((int(x["rss"]) for x in m if x["rss"].isdigit()), default=None)
        cpu = num(cpu_per_100k(res, key))
        lat = " | ".join(num(res.med(key, f)) for f in ("p50", "p90", "p99", "p999"))
        out.append(
            f"| {name} | {scenario} | {rate:,.0f} | {num(ratio)} | {lat} | {res.fair(key)} "
            f"| {res.errors(key)} | {f'{rss / 1024:.1f} MiB' if rss else '-'} | {cpu} "
            f"| {'; '.join(targets(res, key)) or '-'} |")
    uneven = [k for k in rows if k[1] == "uneven" and not WINDOW.match(k[0])]
    if uneven:
        out += ["", "Uneven work, against the balancer that lets busy workers be: rrb-none for "
                "every contender, and Node's own rr primary (node-rr) for the Node workers.", "",
                "| contender | req/s | p99 ms | × rrb-none req/s | p99 ÷ rrb-none p99 "
                "| × node-rr req/s | p99 ÷ node-rr p99 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for key in uneven:
            name = key[0]
            node = ("node-rr", "uneven")
            is_node = name.startswith("node-") or name in NODE_CONTENDERS
            vs_node = (f"{num(res.ratio(key, node, 'rate'))} | {num(res.ratio(key, node, 'p99'))}"
                       if is_node else "- | -")
            none = ("rrb-none", "uneven")
            out.append(f"| {name} | {res.med(key, 'rate'):,.0f} | {res.med(key, 'p99'):.2f} "
                       f"| {num(res.ratio(key, none, 'rate'))} "
                       f"| {num(res.ratio(key, none, 'p99'))} | {vs_node} |")
    print("\n".join(out))


def cpu_per_100k(res, key):
    """Median master CPU seconds per 100,000 connections of `key`'s runs, nan without."""
    cpus = []
    for x, r in zip(res.meta.get(key, []), res.rows.get(key, [])):
        parts = x["cpu"].split()
        if len(parts) == 3 and r["total"] > 0:
            t0, t1, clk = map(float, parts)
            cpus.append((t1 - t0) / clk / r["total"] * 1e5)
    return statistics.median(cpus) if cpus else float("nan")


def peak_rss_kib(res, key):
    rss = [int(x["rss"]) for x in res.meta.get(key, []) if x["rss"].isdigit()]
    return max(rss) if rss else float("nan")


def scale(raw_path, meta_path, counts):
    """The worker-count sweep: per count, rr (spread, and with `[dispatch] batch`) against the
    kernel's SO_REUSEPORT spread (the reference) and none; how rr's rate and master CPU per
    connection move from the smallest count to the largest; and, where measured, what each rr
    does when one request in N blocks its worker (uneven)."""
    res = Results(raw_path, meta_path)
    counts = [int(n) for n in counts.split(",")]
    lo, hi = min(counts), max(counts)
    out = []
    for name, title in (("rrb-rr", "rr (`batch = false`, the default)"),
                        ("rrb-rr-batch", "rr with `[dispatch] batch = true`")):
        if not any((f"{name}@{n}", "close") in res.rows for n in counts):
            continue
        rss_lo = peak_rss_kib(res, (f"{name}@{lo}", "close"))
        out += [f"### {title}", "",
                "| workers | req/s | reference req/s | ÷ reference | rrb-none req/s "
                f"| master CPU s /100k conns | master peak RSS | RSS per worker above {lo} "
                "| errors |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in counts:
            rr, ref, none = (f"{name}@{n}", "close"), (f"reference@{n}", "close"), \
                (f"rrb-none@{n}", "close")
            rss = peak_rss_kib(res, rr)
            per = (rss - rss_lo) / (n - lo) if n > lo else float("nan")
            out.append(
                f"| {n} | {num(res.med(rr, 'rate'), ',.0f')} "
                f"| {num(res.med(ref, 'rate'), ',.0f')} "
                f"| {num(res.ratio(rr, ref, 'rate'))} | {num(res.med(none, 'rate'), ',.0f')} "
                f"| {num(cpu_per_100k(res, rr))} | {num(rss / 1024, '.1f')} MiB "
                f"| {num(per, '.0f')} KiB | {res.errors(rr)} |")
        rr_lo, rr_hi = (f"{name}@{lo}", "close"), (f"{name}@{hi}", "close")
        cpu_lo, cpu_hi = cpu_per_100k(res, rr_lo), cpu_per_100k(res, rr_hi)
        cpu_ratio = cpu_hi / cpu_lo if cpu_lo == cpu_lo and cpu_lo > 0 else float("nan")
        out += ["",
                f"- at {hi} workers ÷ the reference at {hi}: "
                f"{num(res.ratio(rr_hi, (f'reference@{hi}', 'close'), 'rate'))} (target ≥ 1.0)",
                f"- at {hi} ÷ at {lo}: {num(res.ratio(rr_hi, rr_lo, 'rate'))} (target ≥ 0.85)",
                f"- master CPU per 100k connections at {hi} ÷ at {lo}: {num(cpu_ratio)} "
                "(target ≤ 1.3)", ""]
    if any(s == "uneven" for _, s in res.rows):
        out += ["### uneven: one request in N (--slow-every) holds its worker M ms (--slow-ms), "
                "wrk -c with --uneven-conns", "",
                "| workers | rr req/s | rr p50 ms | rr p99 ms | batch req/s | batch p50 ms "
                "| batch p99 ms | batch ÷ rr |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in counts:
            rr, batch = (f"rrb-rr@{n}", "uneven"), (f"rrb-rr-batch@{n}", "uneven")
            out.append(
                f"| {n} | {num(res.med(rr, 'rate'), ',.0f')} | {num(res.med(rr, 'p50'))} "
                f"| {num(res.med(rr, 'p99'))} | {num(res.med(batch, 'rate'), ',.0f')} "
                f"| {num(res.med(batch, 'p50'))} | {num(res.med(batch, 'p99'))} "
                f"| {num(res.ratio(batch, rr, 'rate'))} |")
    print("\n".join(out))


def windows(raw_path, meta_path):
    """rrb-rr per max_unacked window: uniform close against the reference, uneven against
    rrb-none, with the targets of rrb-rr in those scenarios."""
    res = Results(raw_path, meta_path)
    sweep = sorted({(int(m.group(1)), name) for name, _ in res.rows
                    if (m := WINDOW.match(name))})
    out = ["Window sweep: rrb-rr with `[worker] max_unacked = W`, in the same rounds as the "
           "reference and rrb-none.", "",
           "| window | close req/s | × reference | close p99 ms | busiest/idlest | uneven req/s "
           "| uneven p99 ms | × rrb-none | p99 ÷ rrb-none p99 | errors | target |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for w, name in sweep:
        close, uneven = (name, "close"), (name, "uneven")
        ref, none = ("reference", "close"), ("rrb-none", "uneven")
        checks = []
        if close in res.rows and ref not in res.rows:
            checks.append("close: ?")
        elif close in res.rows:
            lo, p99_max, fair_max = TARGETS[("rrb-rr", "close")]
            ok = (res.ratio(close, ref, "rate") >= lo and res.ratio(close, ref, "p99") <= p99_max
                  and res.spread_ok(close, fair_max) and res.errors(close) == 0)
            checks.append(f"close: {'PASS' if ok else 'MISS'}")
        if uneven in res.rows:
            checks.append("uneven: " + uneven_native(res, uneven).split(" ", 1)[0])
        out.append(
            f"| {w} | {num(res.med(close, 'rate'), ',.0f')} | {num(res.ratio(close, ref, 'rate'))} "
            f"| {num(res.med(close, 'p99'))} | {res.fair(close)} "
            f"| {num(res.med(uneven, 'rate'), ',.0f')} | {num(res.med(uneven, 'p99'))} "
            f"| {num(res.ratio(uneven, none, 'rate'))} | {num(res.ratio(uneven, none, 'p99'))} "
            f"| {res.errors(close) + res.errors(uneven)} | {'; '.join(checks) or '-'} |")
    print("\n".join(out))


def plot(raw_path, png):
    if not shutil.which("gnuplot"):
        print("gnuplot not found: no chart (apt-get install -y gnuplot-nox)", file=sys.stderr)
        return
    rates = defaultdict(list)
    for line in open(raw_path):
        name, scenario, _run, rate, *_ = line.split("\t")
        rates[(name, scenario)].append(float(rate))
    data = []
    for scenario in ("close", "keepalive", "uneven"):
        ref = statistics.median(rates.get(("reference", scenario), [0])) or 1
        for (name, sc), r in rates.items():
            if sc == scenario and not WINDOW.match(name):
                data.append(f'"{name}\\n{scenario}" {statistics.median(r) / ref:.3f}')
    script = f"""set terminal png size 1000,420
set output '{png}'
set style fill solid
set boxwidth 0.7
set ylabel 'rate / reference (same run)'
set yrange [0:*]
set xtics rotate by -30 font ',8'
plot '-' using 0:2:xtic(1) with boxes notitle, 1 with lines dt 2 notitle
{chr(10).join(data)}
e
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"chart: {png}", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "parse":
        parse(*sys.argv[2:5])
    elif cmd == "fairness":
        fairness(int(sys.argv[2]))
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3])
    elif cmd == "windows":
        windows(sys.argv[2], sys.argv[3])
    elif cmd == "scale":
        scale(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
