#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: parse wrk output, compute fairness, print the results table,
draw the chart. Standard library only.

  report.py parse NAME SCENARIO RUN < wrk-output      -> one TSV row
  report.py fairness WORKERS < wrk-output-with-count.lua  -> busiest/idlest ratio
  report.py table RAW.tsv META.tsv                    -> the markdown table
  report.py plot RAW.tsv OUT.png                      -> bar chart of the ratios (gnuplot)
"""
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse(name, scenario, run):
    text = sys.stdin.read()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
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
           f"{ms(p50.group(1)):.3f}" if p50 else "nan",
           f"{ms(p99.group(1)):.3f}" if p99 else "nan",
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
    ("rrb-rr", "close"): (0.90, 1.5, 1.02),
    ("rrb-none", "close"): (0.97, None, None),
    ("rrb-none", "keepalive"): (0.97, None, None),
    ("rrb-rr", "keepalive"): (0.98, None, None),
}
NODE_TARGET = 2.0  # rrbalancer with Node workers vs Node's own rr primary, new connections


def table(raw_path, meta_path):
    rows = defaultdict(list)
    for line in open(raw_path):
        name, scenario, run, rate, total, p50, p99, errors = line.rstrip("\n").split("\t")
        rows[(name, scenario)].append(
            dict(rate=float(rate), total=int(total), p50=float(p50), p99=float(p99),
                 errors=int(errors)))
    meta = defaultdict(list)
    for line in open(meta_path):
        name, scenario, run, fair, rss, cpu = line.rstrip("\n").split("\t")
        meta[(name, scenario)].append(dict(fair=fair, rss=rss, cpu=cpu))

    def med(key, field):
        return statistics.median(r[field] for r in rows[key]) if rows.get(key) else float("nan")

    out = ["| contender | scenario | req/s | × reference | p50 ms | p99 ms | busiest/idlest "
           "| errors | master peak RSS | master CPU s /100k conns | target |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in rows:
        name, scenario = key
        rate, p50, p99 = med(key, "rate"), med(key, "p50"), med(key, "p99")
        ref = med(("reference", scenario), "rate")
        ref_p99 = med(("reference", scenario), "p99")
        ratio = rate / ref if ref == ref and ref > 0 else float("nan")
        errors = sum(r["errors"] for r in rows[key])
        m = meta.get(key, [])
        fair = m[0]["fair"] if m else "-"
        rss = max((int(x["rss"]) for x in m if x["rss"].isdigit()), default=None)
        cpus = []
        for x, r in zip(m, rows[key]):
            parts = x["cpu"].split()
            if len(parts) == 3 and r["total"] > 0:
                t0, t1, clk = map(float, parts)
                cpus.append((t1 - t0) / clk / r["total"] * 1e5)
        cpu = f"{statistics.median(cpus):.2f}" if cpus else "-"
        verdict = []
        target = TARGETS.get(key)
        if target:
            lo, p99_max, fair_max = target
            ok = ratio >= lo and errors == 0
            text = f"≥{lo:.2f}×"
            if p99_max:
                ok = ok and p99 <= p99_max * ref_p99
                text += f", p99 ≤{p99_max}× ref"
            if fair_max:
                try:
                    ok = ok and float(fair) <= fair_max
                except ValueError:
                    ok = False
                text += f", ≤{fair_max} spread"
            verdict.append(("PASS " if ok else "MISS ") + text)
        if name in ("rrb-node-cluster", "rrb-node") and scenario == "close":
            node_rr = med(("node-rr", "close"), "rate")
            if node_rr == node_rr and node_rr > 0:
                x = rate / node_rr
                try:
                    fair_ok = float(fair) <= 1.05
                except ValueError:
                    fair_ok = False
                ok = x >= NODE_TARGET and fair_ok
                verdict.append(f"{'PASS' if ok else 'MISS'} {x:.2f}× Node's rr primary "
                               f"(≥{NODE_TARGET}×, ≤1.05 spread)")
        out.append(
            f"| {name} | {scenario} | {rate:,.0f} | {ratio:.2f} | {p50:.2f} | {p99:.2f} | {fair} "
            f"| {errors} | {f'{rss / 1024:.1f} MiB' if rss else '-'} | {cpu} "
            f"| {'; '.join(verdict) or '-'} |")
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
    for scenario in ("close", "keepalive"):
        ref = statistics.median(rates.get(("reference", scenario), [0])) or 1
        for (name, sc), r in rates.items():
            if sc == scenario:
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
    elif cmd == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
