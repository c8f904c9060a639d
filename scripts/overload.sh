#!/usr/bin/env bash
# Keep-alive clients beyond what the workers may hold: the master and its workers run under a
# low open-file limit (`ulimit -n`, which the workers inherit), wrk opens more connections than
# that, and the run checks that the service degrades and recovers: the master is alive
# throughout, a fresh client is served within 5 s of the load stopping, no slot is given up,
# no worker restarted. Prints one line per run and exits 1 if any run broke a promise.
#
#   scripts/overload.sh [-n NOFILE] [-c CONNECTIONS] [-d SECONDS] [-r RUNS] [-w WORKERS]
#                       [-- extra TOML lines for the config, e.g. a [worker] section]
#
# Defaults: -n 256 -c 500 -d 20 -r 3 -w 2, the demo worker. Needs wrk (apt-get install -y wrk:
# installed here when missing and possible). Only 127.0.0.1; every process is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

nofile=256 conns=500 secs=20 runs=3 workers=2
while getopts "n:c:d:r:w:" opt; do
    case $opt in
        n) nofile=$OPTARG ;;
        c) conns=$OPTARG ;;
        d) secs=$OPTARG ;;
        r) runs=$OPTARG ;;
        w) workers=$OPTARG ;;
        *) sed -n '2,12p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
extra=$(printf '%s\n' "$@")

if ! command -v wrk >/dev/null; then
    echo "== installing wrk (apt-get install -y wrk)"
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 ||
        { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
fi
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer

work=$(mktemp -d)
master=""
cleanup() {
    if [ -n "$master" ]; then kill -TERM -- "-$master" 2>/dev/null || true; fi
    sleep 0.5
    if [ -n "$master" ]; then kill -KILL -- "-$master" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

failed=0
echo "== $runs run(s): ulimit -n $nofile, $workers workers, wrk -t2 -c$conns -d${secs}s (keep-alive)"
for run in $(seq 1 "$runs"); do
    port=$(free_port)
    cat >"$work/cluster.toml" <<EOF
listen = ["127.0.0.1:$port"]
workers = $workers
[control]
socket = "$work/ctl.sock"
pid_file = "$work/rrb.pid"
$extra
EOF
    setsid bash -c "ulimit -n $nofile && exec '$bin' --config '$work/cluster.toml'" \
        >"$work/master.log" 2>&1 &
    master=$!
    for _ in $(seq 100); do
        curl -s -m 1 "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    wrk -t2 -c"$conns" -d"${secs}s" --timeout 5s "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1 &
    load=$!
    alive_all=yes
    while kill -0 "$load" 2>/dev/null; do
        kill -0 "$master" 2>/dev/null || alive_all=no
        sleep 0.5
    done
    wait "$load" || true
    start=$(date +%s%N)
    fresh=""
    while [ -z "$fresh" ]; do
        elapsed_ms=$((($(date +%s%N) - start) / 1000000))
        if curl -s -m 1 "http://127.0.0.1:$port/" | grep -q .; then
            fresh="$((($(date +%s%N) - start) / 1000000)) ms"
        elif [ "$elapsed_ms" -gt 5000 ]; then
            fresh=none
        fi
    done
    status=$("$bin" --control "$work/ctl.sock" status --json 2>/dev/null || echo '{}')
    restarts=$(echo "$status" | python3 -c 'import json,sys
s=json.load(sys.stdin); print(sum(w["restarts"] for w in s.get("workers",[]) if w["role"]=="current"))' 2>/dev/null || echo "?")
    gaveup=$(grep -c "giveup" "$work/master.log" || true)
    full=$(grep -c "open-file limit\|out of file descriptors" "$work/master.log" || true)
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
    errors=$(grep "Socket errors" "$work/wrk.txt" | sed 's/^ *Socket errors: //' || true)
    non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt")
    printf 'run %d: master alive throughout: %s; requests %s; errors: %s; non-2xx: %s; fresh client served after the load in %s; restarts %s; giveups %s; full episodes logged %s\n' \
        "$run" "$alive_all" "${requests:-?}" "${errors:-none}" "${non2xx:-0}" "$fresh" "$restarts" "$gaveup" "$full"
    if [ "$alive_all" != yes ] || [ "$fresh" = none ] || [ "$restarts" != 0 ] || [ "$gaveup" != 0 ]; then
        failed=1
        tail -20 "$work/master.log"
    fi
    kill -TERM -- "-$master" 2>/dev/null || true
    wait "$master" 2>/dev/null || true
    master=""
done
exit $failed
