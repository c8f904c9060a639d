#!/usr/bin/env bash
# rrbalancer's benchmark: every contender side by side in one run, on loopback, each rate also
# given as a ratio of the no-balancer reference measured in the same run.
#
#   scripts/bench.sh                 # everything: 2 workers, 5 s per run, median of 3
#   scripts/bench.sh --quick         # 1 run of 2 s each, no memory scenario
#   scripts/bench.sh --only rrb-rr,reference -r 5
#   scripts/bench.sh --scenario close,uneven --windows 1,2,4,8,16,32,128 --only reference,rrb-rr,rrb-none
#   scripts/bench.sh --workers 2,16,64,256      # cost per worker count: rr against the kernel
#
# Options:
#   -w N        workers per contender (2)          -d SECONDS   length of each run (5)
#   -r RUNS     runs per measurement, median (3)   -c CONNS     wrk connections (50)
#   --only A,B  contenders: reference rrb-rr rrb-rr-metrics rrb-rr-apps rrb-rr-batch rrb-none haproxy
#               haproxy-leastconn node-rr
#               node-none rrb-node-cluster rrb-node, and the scenario "memory"
#   --scenario A,B     scenarios: close keepalive uneven (all three)
#   --uneven-conns N   wrk connections in the uneven scenario (20)
#   --slow-every N     uneven scenario: every Nth request of each worker is slow (50)
#   --slow-ms M        uneven scenario: a slow request burns M ms of CPU in its worker (20)
#   --windows W,W      window sweep: rrb-rr once per max_unacked W, in close and uneven (none)
#   --workers N,N      worker-count sweep instead of the contenders above: reference, rrb-rr,
#               rrb-rr-batch and rrb-none (--only picks among them) in the close scenario once
#               per count, and the two rr ones in the uneven scenario too (unless --scenario
#               leaves it out); prints req/s, master CPU per 100k connections, master peak RSS
#               (and per worker) per count, and the ratios between the largest and smallest
#   --conns N   connections served in the memory scenario's growth check (1000000)
#   --quick     -r 1 -d 2, and skip the memory scenario unless --only names it
#
# Contenders: rrbalancer rr and none with its demo worker; the reference (the same demo worker,
# N processes each with its own SO_REUSEPORT listener: the kernel's limit, no balancer);
# HAProxy (mode tcp, one thread, roundrobin; and leastconn, uneven scenario only) in front of N
# single demo workers; Node's own cluster primary (SCHED_RR and SCHED_NONE) with
# bench/node_cluster.js; rrbalancer with that same Node app (node-cluster) and with
# scripts/node/worker.js (node). With --windows, also rrb-rr-wW: rrb-rr with max_unacked = W.
# rrb-rr-batch: rrb-rr with `[dispatch] batch = true`. rrb-rr-apps: rrb-rr as one [[app]] of a
# file beside two idle apps of as many workers (its master's CPU and RSS are that app's master's).
# Scenarios: "close" (a new connection per request), "keepalive", and "uneven" (close, with
# every worker started with --slow-every/--slow-ms: 1 request in N blocks its event loop).
# Rounds outermost, contenders inside: each is started once per round and kind of worker.
# Writes the table to bench/results/latest.md (and latest.png with gnuplot).
# Needs wrk and haproxy (installed with apt-get when missing and possible), node, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

workers=2 duration=5 runs=3 conns=50 only="" quick="" memory_conns=1000000
scenarios=close,keepalive,uneven uneven_conns=20 slow_every=50 slow_ms=20 windows="" sweep=""
# Appended to a contender's name in its rows (the worker-count sweep: "rrb-rr@256").
suffix=""
# The comment block at the top of this file, up to its first line of code.
usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -w) workers=$2; shift ;;
    -d) duration=$2; shift ;;
    -r) runs=$2; shift ;;
    -c) conns=$2; shift ;;
    --only) only=$2; shift ;;
    --conns) memory_conns=$2; shift ;;
    --scenario | --scenarios) scenarios=$2; shift ;;
    --uneven-conns) uneven_conns=$2; shift ;;
    --slow-every) slow_every=$2; shift ;;
    --slow-ms) slow_ms=$2; shift ;;
    --windows) windows=$2; shift ;;
    --workers) sweep=$2; shift ;;
    --quick) quick=1 runs=1 duration=2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
# A window-sweep contender rrb-rr-wW is wanted with rrb-rr (or by its own name).
wanted_contender() { wanted "$1" || { [[ $1 == rrb-rr-w* ]] && wanted rrb-rr; }; }
selected() { [[ ",$scenarios," == *",$1,"* ]]; }
bad() { echo "$1 (see --help)" >&2; exit 2; }
for s in ${scenarios//,/ }; do
  case "$s" in close | keepalive | uneven) ;; *) bad "unknown scenario $s (close, keepalive, uneven)" ;; esac
done
for n in "$workers" "$duration" "$runs" "$conns" "$uneven_conns" "$slow_every" "$slow_ms" ${windows//,/ } ${sweep//,/ }; do
  [[ $n =~ ^[0-9]+$ ]] || bad "not a number: $n"
done
for c in ${only//,/ }; do
  case "$c" in
    reference | rrb-rr | rrb-rr-metrics | rrb-rr-apps | rrb-rr-batch | rrb-rr-w[0-9]* | rrb-none | haproxy | haproxy-leastconn | node-rr | node-none) ;;
    rrb-node-cluster | rrb-node | memory) ;;
    *) bad "unknown contender $c in --only" ;;
  esac
done
for w in ${windows//,/ }; do
  [ "$w" -ge 1 ] && [ "$w" -le 65536 ] || bad "window $w out of range (1 to 65536, like max_unacked)"
done

# ---- tools ------------------------------------------------------------------------------------
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 (apt-get install -y $2)…" >&2
    apt-get install -y -qq "$2" >/dev/null 2>&1 && command -v "$1" >/dev/null && return 0
  fi
  echo "missing $1: install it with 'apt-get install -y $2'" >&2
  return 1
}
need wrk wrk || exit 1
have_haproxy=1; need haproxy haproxy || have_haproxy=""
have_node=1; command -v node >/dev/null || { echo "node not found: Node contenders skipped" >&2; have_node=""; }
need python3 python3 || exit 1

echo "building rrbalancer (release)…" >&2
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer
out=bench/results
mkdir -p "$out"
tmp=$(mktemp -d)
raw=$tmp/raw.tsv # contender scenario run rate total p50 p90 p99 p99.9 errors (report.py parse)
: >"$raw"

# ---- process groups: everything we start dies with us ---------------------------------------
# Every process group we start is recorded in a file (spawn runs in $(…) subshells too).
groups=$tmp/groups
: >"$groups"
stop_all() {
  local g
  while read -r g; do kill -TERM -- "-$g" 2>/dev/null || true; done <"$groups"
  sleep 0.3
  while read -r g; do kill -KILL -- "-$g" 2>/dev/null || true; done <"$groups"
  : >"$groups"
}
cleanup() {
  [ -s "$tmp/wrk.pid" ] && kill -TERM "$(cat "$tmp/wrk.pid")" 2>/dev/null
  stop_all
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "interrupted: stopping everything" >&2; exit 130' INT TERM
# Runs wrk with OUT as its output. In the background with `wait`, because bash runs no INT
# trap for a foreground child that handles Ctrl-C itself and exits 0, as wrk does: `wait`
# returns at once on the signal, the trap runs, and cleanup kills wrk too.
run_wrk() {
  local out=$1
  shift
  wrk "$@" >"$out" 2>&1 &
  echo $! >"$tmp/wrk.pid"
  wait $! || true
  : >"$tmp/wrk.pid"
}
# Starts "$@" in a new session (its own process group, led by it); prints its pid.
spawn() {
  setsid "$@" </dev/null >>"$tmp/log" 2>&1 &
  local pid=$!
  echo "$pid" >>"$groups"
  echo "$pid"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1; log:" >&2; tail -20 "$tmp/log" >&2; return 1
}

# ---- measuring --------------------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
clk=$(getconf CLK_TCK)

# measure NAME SCENARIO PORT MASTER_PID(or 0) RUN: one timed run (and, on run 1, who served).
measure() {
  local name=$1 scenario=$2 port=$3 master=$4 run=$5 header=() fairness=- c=$conns
  [ "$scenario" != keepalive ] && header=(-H "Connection: close")
  [ "$scenario" = uneven ] && c=$uneven_conns
  # Warm up; on the first run also count who serves (not timed: the Lua callback costs wrk).
  if [ "$run" = 1 ]; then
    run_wrk "$tmp/fair" -t1 -c"$c" -d1s "${header[@]}" -s bench/count.lua "http://127.0.0.1:$port/"
    fairness=$(python3 bench/report.py fairness "$workers" <"$tmp/fair")
  else
    run_wrk /dev/null -t1 -c"$c" -d1s "${header[@]}" "http://127.0.0.1:$port/"
  fi
  local t0=0 t1=0 text rss=- cpu=-
  [ "$master" != 0 ] && t0=$(cpu_ticks "$master")
  # latency.lua prints p50/p90/p99/p99.9 (wrk's --latency stops at 99).
  run_wrk "$tmp/run" -t1 -c"$c" -d"${duration}s" "${header[@]}" -s bench/latency.lua "http://127.0.0.1:$port/"
  text=$(cat "$tmp/run")
  if [ "$master" != 0 ]; then
    t1=$(cpu_ticks "$master")
    rss=$(rss_peak_kib "$master")
    cpu="$t0 $t1 $clk"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name$suffix" "$scenario" "$run" "$fairness" "$rss" "$cpu" >>"$tmp/meta"
  echo "$text" | python3 bench/report.py parse "$name$suffix" "$scenario" "$run" >>"$raw"
  printf '  run %s  %-17s %-9s %s req/s, p99 %s ms\n' "$run" "$name$suffix" "$scenario" \
    "$(tail -n1 "$raw" | cut -f4)" "$(tail -n1 "$raw" | cut -f8)" >&2
}

# rrb_config FILE WINDOW(or "") SLOW(or ""): rrbalancer's config for its demo worker.
rrb_config() {
  {
    echo "[worker]"
    if [ -n "$3" ]; then echo "args = [\"--slow-every\", \"$slow_every\", \"--slow-ms\", \"$slow_ms\"]"; fi
    if [ -n "$2" ]; then echo "max_unacked = $2"; fi
    if [ -n "${4:-}" ]; then printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$4"; fi
    if [ -n "${5:-}" ]; then printf '[dispatch]\nbatch = true\n'; fi
  } >"$1"
}

# contender NAME RUN KIND SCENARIO…: start it with uniform or uneven (KIND) workers, measure
# each SCENARIO once, stop it.
contender() {
  local name=$1 run=$2 kind=$3 port master=0 slow="" demo=() node_env=(SLOW_EVERY=0)
  shift 3
  if [ "$kind" = uneven ]; then
    slow=1
    demo=(--slow-every "$slow_every" --slow-ms "$slow_ms")
    node_env=(SLOW_EVERY="$slow_every" SLOW_MS="$slow_ms")
  fi
  port=$(free_port)
  case "$name" in
    rrb-rr | rrb-rr-metrics | rrb-rr-batch | rrb-none | rrb-rr-w*)
      local cfg=$tmp/rrb-$name-$kind.toml policy=rr window="" metrics="" batch=""
      [ "$name" = rrb-none ] && policy=none
      [ "$name" = rrb-rr-batch ] && batch=1
      [[ $name == rrb-rr-w* ]] && window=${name#rrb-rr-w}
      [ "$name" = rrb-rr-metrics ] && metrics=$(free_port)
      rrb_config "$cfg" "$window" "$slow" "$metrics" "$batch"
      master=$(spawn "$bin" --config "$cfg" -w "$workers" -l "127.0.0.1:$port" --sched-policy "$policy" run)
      # Scraped every second while it runs, as a Prometheus server would.
      if [ -n "$metrics" ]; then
        spawn sh -c "while sleep 1; do curl -s -o /dev/null http://127.0.0.1:$metrics/metrics; done" >/dev/null
      fi ;;
    rrb-rr-apps)
      # The app measured, then two that serve nothing meanwhile.
      local cfg=$tmp/rrb-apps-$kind.toml
      {
        if [ -n "$slow" ]; then printf '[worker]\nargs = ["--slow-every", "%s", "--slow-ms", "%s"]\n' "$slow_every" "$slow_ms"; fi
        printf '[[app]]\nname = "api"\nlisten = "127.0.0.1:%s"\nworkers = %s\n' "$port" "$workers"
        for idle in idle1 idle2; do
          printf '[[app]]\nname = "%s"\nlisten = "127.0.0.1:%s"\nworkers = %s\n' "$idle" "$(free_port)" "$workers"
        done
      } >"$cfg"
      spawn "$bin" --config "$cfg" run >/dev/null
      wait_port "$port" || true
      master=$(pgrep -f -- "--config $cfg --app api" | head -n1)
      master=${master:-0} ;;
    reference)
      for _ in $(seq "$workers"); do spawn "$bin" demo-worker --standalone "127.0.0.1:$port" "${demo[@]}" >/dev/null; done ;;
    haproxy | haproxy-leastconn)
      local cfg=$tmp/haproxy.cfg balance=roundrobin
      [ "$name" = haproxy-leastconn ] && balance=leastconn
      printf 'global\n  nbthread 1\n  maxconn 5000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nlisten bench\n  bind 127.0.0.1:%s\n  balance %s\n' "$port" "$balance" >"$cfg"
      for i in $(seq "$workers"); do
        local p; p=$(free_port)
        spawn "$bin" demo-worker --standalone "127.0.0.1:$p" "${demo[@]}" >/dev/null
        printf '  server w%s 127.0.0.1:%s\n' "$i" "$p" >>"$cfg"
        wait_port "$p"
      done
      master=$(spawn haproxy -db -f "$cfg") ;;
    node-rr | node-none)
      master=$(spawn env NODE_CLUSTER_SCHED_POLICY="${name#node-}" WORKERS="$workers" PORT="$port" "${node_env[@]}" node bench/node_cluster.js) ;;
    rrb-node-cluster)
      master=$(spawn env PORT="$port" "${node_env[@]}" "$bin" -w "$workers" -l "127.0.0.1:$port" --config bench/node-cluster.toml run) ;;
    rrb-node)
      # scripts/node/worker.js as is; for uneven work, wrapped by bench/node_child_worker.js.
      local cfg=bench/node-child.toml
      [ -n "$slow" ] && cfg=bench/node-child-uneven.toml
      master=$(spawn env "${node_env[@]}" "$bin" -w "$workers" -l "127.0.0.1:$port" --config "$cfg" run) ;;
  esac
  if ! wait_port "$port"; then
    echo "  skipped: $name did not start" >&2
    stop_all
    return 0
  fi
  sleep 0.5 # let every worker come up
  local scenario
  for scenario in "$@"; do
    measure "$name" "$scenario" "$port" "$master" "$run"
  done
  stop_all
}

# scenarios_of NAME KIND: the selected scenarios NAME runs with KIND (uniform|uneven) workers.
# HAProxy leastconn only differs from roundrobin when work is uneven; the window sweep is the
# uniform close scenario and the uneven one.
scenarios_of() {
  local name=$1 kind=$2 s
  for s in close keepalive uneven; do
    selected "$s" || continue
    case "$kind:$s" in uniform:close | uniform:keepalive | uneven:uneven) ;; *) continue ;; esac
    [ "$name" = haproxy-leastconn ] && [ "$s" != uneven ] && continue
    [[ $name == rrb-rr-w* ]] && [ "$s" = keepalive ] && continue
    echo "$s"
  done
}

# ---- the worker-count sweep ------------------------------------------------------------------
if [ -n "$sweep" ]; then
  echo "bench: worker counts ${sweep}, close scenario, ${duration}s × ${runs} runs; wrk -t1 -c${conns}" >&2
  : >"$tmp/meta"
  for run in $(seq "$runs"); do
    for n in ${sweep//,/ }; do
      workers=$n suffix="@$n"
      for c in reference rrb-rr rrb-rr-batch rrb-none; do
        wanted "$c" || continue
        contender "$c" "$run" uniform close
        # What batching costs when one request in N blocks its worker: rr with and without.
        if selected uneven && [[ $c == rrb-rr* ]]; then contender "$c" "$run" uneven uneven; fi
      done
    done
  done
  suffix=""
  {
    echo "# rrbalancer benchmark: cost per worker count"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r)"
    echo "\`Connection: close\`, wrk -t1 -c${conns}; ${duration}s per run, median of ${runs} interleaved rounds; demo workers; load generator on the same machine."
    echo
    python3 bench/report.py scale "$raw" "$tmp/meta" "$sweep"
  } >"$out/scale.md"
  cat "$out/scale.md"
  exit 0
fi

contenders=(reference rrb-rr rrb-rr-metrics rrb-rr-apps)
for w in ${windows//,/ }; do contenders+=("rrb-rr-w$w"); done
contenders+=(rrb-none)
[ -n "$have_haproxy" ] && contenders+=(haproxy haproxy-leastconn)
[ -n "$have_node" ] && contenders+=(node-rr node-none rrb-node-cluster rrb-node)
echo "bench: ${workers} workers, ${duration}s × ${runs} runs, scenarios ${scenarios}; wrk -t1 -c${conns} (uneven: -c${uneven_conns}, 1 request in ${slow_every} per worker burns ${slow_ms} ms)" >&2
: >"$tmp/meta"
# Rounds outermost, then the kind of worker (uniform, uneven: a contender is restarted for
# it), contenders inside: every contender is measured once per round and scenario, so slow
# drift of the (shared) machine touches all of them alike.
for run in $(seq "$runs"); do
  for kind in uniform uneven; do
    for c in "${contenders[@]}"; do
      wanted_contender "$c" || continue
      mapfile -t these < <(scenarios_of "$c" "$kind")
      [ ${#these[@]} -gt 0 ] || continue
      contender "$c" "$run" "$kind" "${these[@]}"
    done
  done
done

# ---- memory: 10,000 idle keep-alive connections, and growth over many served ----------------
memory=""
if { [ -z "$quick" ] && [ -z "$only" ]; } || [[ ",$only," == *",memory,"* ]]; then
  echo "memory" >&2
  port=$(free_port)
  master=$(spawn "$bin" -w "$workers" -l "127.0.0.1:$port" run)
  wait_port "$port" || exit 1
  before=$(awk '/VmRSS/ {print $2}' "/proc/$master/status")
  python3 bench/idle_clients.py "$port" 10000 "$master" >"$tmp/idle" 2>&1 || cat "$tmp/idle" >&2
  idle=$(cat "$tmp/idle")
  # Serve memory_conns new connections, at the close-scenario rate measured above.
  rate=$(awk -F'\t' '$1=="rrb-rr" && $2=="close" {print $4}' "$raw" | sort -n | head -n1)
  secs=$(python3 -c "import math; print(max(5, math.ceil($memory_conns / max(1.0, float('${rate:-20000}')))))")
  mid=$(awk '/VmRSS/ {print $2}' "/proc/$master/status")
  run_wrk "$tmp/served" -t1 -c"$conns" -d"${secs}s" -H "Connection: close" "http://127.0.0.1:$port/"
  served=$(awk '/requests in/ {print $1}' "$tmp/served")
  after=$(awk '/VmRSS/ {print $2}' "/proc/$master/status")
  memory="$idle; RSS after 10k idle: ${mid} KiB; served ${served} more connections: RSS ${mid} → ${after} KiB (growth $((after - mid)) KiB); RSS at start ${before} KiB"
  stop_all
fi

# ---- report -----------------------------------------------------------------------------------
{
  echo "# rrbalancer benchmark"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r)"
  echo "${workers} workers per contender; close and keepalive: wrk -t1 -c${conns}; ${duration}s per run, median of ${runs} interleaved rounds; load generator on the same machine."
  selected uneven && echo "Uneven work: \`Connection: close\`, wrk -t1 -c${uneven_conns}; every ${slow_every}th request of each worker burns ${slow_ms} ms of CPU before its answer."
  echo "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2); $( [ -n "$have_haproxy" ] && haproxy -v | head -n1 | cut -d' ' -f1-3); node $(node --version 2>/dev/null || echo -)"
  echo
  python3 bench/report.py table "$raw" "$tmp/meta"
  if [ -n "$windows" ]; then
    echo
    python3 bench/report.py windows "$raw" "$tmp/meta"
  fi
  if [ -n "$memory" ]; then
    echo
    echo "**Memory** (rrbalancer rr master): $memory"
  fi
} >"$out/latest.md"
cat "$out/latest.md"
python3 bench/report.py plot "$raw" "$out/latest.png" >&2 || true
