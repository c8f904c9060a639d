#!/usr/bin/env bash
# A graceful stop in the middle of a burst (issue 28, 2.): rrbalancer with 2 demo workers, CLIENTS
# clients connecting at once (bench/stop_burst.py), SIGTERM to the master once half of them have
# connected; RUNS runs with `backlog = 4096` (the burst fits the kernel's accept queue) and RUNS
# with the default 511 (it overflows: the kernel drops the last ACK of some handshakes). Prints per
# run how many clients were answered, refused, reset, and the kernel's ListenOverflows.
# Builds with cargo; needs python3, curl, and nstat from iproute2 for the overflow count (without
# nstat, overflows print 0). `--drain D` sets `[shutdown] drain` (the stop drains first);
# `--sched none` runs shared-listener mode, where the workers own the accept queue.
#
#   scripts/stop_burst.sh [CLIENTS (2000)] [RUNS (3)] [--drain D (0s)] [--sched rr|none (rr)]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=2000 runs=3 drain=0s sched=rr positional=0
while [ $# -gt 0 ]; do
  case $1 in
    --drain) drain=$2; shift 2 ;;
    --sched) sched=$2; shift 2 ;;
    *) if [ $positional = 0 ]; then clients=$1; else runs=$1; fi
       positional=$((positional + 1)); shift ;;
  esac
done
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer
tmp=$(mktemp -d)
master=""
cleanup() {
  [ -n "$master" ] && kill -KILL -- "-$master" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
overflows() { nstat -az TcpExtListenOverflows 2>/dev/null | awk '/Overflows/{print $2}' || echo 0; }
for backlog in 4096 511; do
  for run in $(seq "$runs"); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'backlog = %s\nsched_policy = "%s"\n[shutdown]\ndrain = "%s"\n' "$backlog" "$sched" "$drain" \
      >"$tmp/c.toml"
    XDG_RUNTIME_DIR=$tmp setsid "$bin" --config "$tmp/c.toml" -w 2 -l "127.0.0.1:$port" run \
      >"$tmp/log" 2>&1 </dev/null &
    master=$!
    for _ in $(seq 100); do curl -s -m1 "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
    before=$(overflows)
    counts=$(python3 bench/stop_burst.py "$port" "$master" "$clients")
    after=$(overflows)
    for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
    accepted=$(grep -o 'accepted the [0-9]*' "$tmp/log" | grep -o '[0-9]*' || echo 0)
    printf '%s, drain %s, backlog %-4s run %s: %s; accepted at the stop: %s; listen overflows: %s\n' \
      "$sched" "$drain" "$backlog" "$run" "$counts" "${accepted:-0}" "$((after - before))"
    kill -KILL -- "-$master" 2>/dev/null || true
    master=""
  done
done
