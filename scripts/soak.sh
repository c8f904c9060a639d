#!/usr/bin/env bash
# A soak: rrbalancer under load while faults are injected at random, for MINUTES (default 10).
#
#   scripts/soak.sh [MINUTES]           # e.g. scripts/soak.sh 1 for a short run
#   SOAK_SEED=1234 scripts/soak.sh 10   # replays the fault sequence of seed 1234
#   SOAK_VERBOSE=1 scripts/soak.sh 1    # also prints each fault as it is injected
#
# Builds the release binary, then starts a master with 4 demo workers on a free 127.0.0.1 port
# (its own config, pid file and control socket in a temporary directory) and two wrk loads of
# 32 connections each, one with `Connection: close` and one keep-alive, for the whole run. A
# seeded driver (scripts/soak.py, printing its seed) injects a fault every 2-8 s, from 5 s after
# the start to 10 s before the end: SIGKILL of a worker, SIGSTOP of one (SIGCONT 0.5-4 s later),
# `rrbalancer reload`, `rrbalancer scale N` (N from 2 to 6) and `rrbalancer upgrade`.
#
# Prints every 10 s the master's RSS (VmRSS) and fd count and its live workers; at the end the
# requests and errors by kind of both loads (connect, read, write, timeout, non-2xx/3xx), the
# faults injected by kind, whether a fresh client is served after the load, and every process of
# the run left after `rrbalancer stop` (reported, then killed). Exits 1 if the master died, did
# not serve, or left anything behind; 2 on a usage error.
#
# Needs wrk (installed with apt-get when missing and run as root) and python3. Everything stays
# on 127.0.0.1; every process started is in a process group of its own or carries the run's
# marker in its environment, and all are killed on exit, however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; }
minutes=${1:-10}
case "$minutes" in
  -h | --help) usage; exit 0 ;;
esac
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -ge 1 ] || { echo "MINUTES must be a whole number ≥ 1" >&2; usage >&2; exit 2; }
seed=${SOAK_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
[[ $seed =~ ^[0-9]+$ ]] || { echo "SOAK_SEED must be a number" >&2; exit 2; }

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing wrk (apt-get install -y wrk)…" >&2
    apt-get install -y -qq wrk >/dev/null 2>&1 || true
  fi
  command -v wrk >/dev/null || { echo "wrk is missing: install it (as root: apt-get install -y wrk) and run again" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }

echo "building rrbalancer (release)…" >&2
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer

tmp=$(mktemp -d)
marker="soak-$$-$(basename "$tmp")"
groups=$tmp/groups
: >"$groups"
driver=""
# However the run ends: the driver, every process group it started, then every process that
# still carries the run's marker (the masters an upgrade started run in groups of their own),
# then the temporary directory.
cleanup() {
  local g pid
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    sleep 0.5
    kill -KILL "$driver" 2>/dev/null || true
  fi
  while read -r g; do kill -KILL -- "-$g" 2>/dev/null || true; done <"$groups"
  for pid in $(grep -lsa "RRB_SOAK=$marker" /proc/[0-9]*/environ | cut -d/ -f3); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "interrupted: stopping everything" >&2; exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/soak.toml" <<EOF
listen = ["127.0.0.1:$port"]
workers = 4

[control]
pid_file = "$tmp/run/rrbalancer.pid"
socket = "$tmp/run/rrbalancer.sock"
EOF

# In the background with `wait`, so that a signal to this script runs its trap at once (bash runs
# none while a foreground child runs).
python3 scripts/soak.py --bin "$bin" --config "$tmp/soak.toml" --pid-file "$tmp/run/rrbalancer.pid" \
  --addr "127.0.0.1:$port" --minutes "$minutes" --seed "$seed" --tmp "$tmp" --groups "$groups" \
  --log "$tmp/master.log" --marker "$marker" ${SOAK_VERBOSE:+--verbose} &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
if [ "$status" != 0 ]; then
  echo "== the master's log, last 30 lines:" >&2
  tail -n 30 "$tmp/master.log" >&2 || true
fi
exit "$status"
