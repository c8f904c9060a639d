#!/usr/bin/env bash
# The seeds' curl-loop demo: start rrbalancer, fire N sequential requests, show which worker
# (and pid) served each, then stop everything.
#
#   scripts/demo.sh                      # 10 requests, round-robin, built-in demo workers
#   scripts/demo.sh -n 20 -p none        # shared-listener mode: the kernel picks
#   scripts/demo.sh -c config/python.toml
#   scripts/demo.sh -c config/node-child.toml     # seeds-style Node worker (handle passing)
#   scripts/demo.sh -c config/node-cluster.toml   # an unmodified Node cluster app
#   scripts/demo.sh -N                            # both Node demos, rr then none
#
# Options: -n COUNT (10), -p rr|none (the config's), -w WORKERS (the config's, else 3),
# -c CONFIG (embedded default), -N (the Node demos). Binds 127.0.0.1 on a free port. Needs curl
# (and node for the Node demos).
set -euo pipefail
cd "$(dirname "$0")/.."

count=10 policy="" workers="" config="" node=""
while getopts "n:p:w:c:Nh" opt; do
  case "$opt" in
    n) count=$OPTARG ;;
    p) policy=$OPTARG ;;
    w) workers=$OPTARG ;;
    c) config=$OPTARG ;;
    N) node=1 ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
if [ -n "$node" ]; then
  for c in config/node-child.toml config/node-cluster.toml; do
    for p in rr none; do
      echo "=== $c, sched_policy=$p"
      "$0" -n "$count" -p "$p" -c "$c"
    done
  done
  exit 0
fi
command -v curl >/dev/null || { echo "demo.sh needs curl (apt-get install -y curl)" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/rrbalancer
args=(--listen 127.0.0.1:0)
[ -n "$config" ] && args+=(--config "$config")
[ -n "$policy" ] && args+=(--sched-policy "$policy")
if [ -n "$workers" ]; then args+=(--workers "$workers"); elif [ -z "$config" ]; then args+=(--workers 3); fi

log=$(mktemp)
setsid "$bin" "${args[@]}" 2>"$log" &
master=$!
cleanup() {
  kill -TERM "$master" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$master" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT INT TERM

addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \(.*\)$/\1/p' "$log" | head -n1)
  [ -n "$addr" ] && grep -q "worker ready" "$log" && break
  kill -0 "$master" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "rrbalancer did not start:" >&2; cat "$log" >&2; exit 1; }
sleep 0.3 # let every worker say ready
grep -E "sched_policy=|worker ready" "$log" | sed 's/^\[[^]]*\] */  /'
echo "--- $count requests to http://$addr/"
for i in $(seq "$count"); do
  printf '%3d  %s' "$i" "$(curl -s -m 5 "http://$addr/" || echo "FAILED")"
  echo
done
