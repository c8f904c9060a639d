#!/usr/bin/env bash
# Many concurrent keep-alive clients (issue 27, 5.): rrbalancer with W demo workers (that never
# close an idle connection), CLIENTS connections opened from several loopback source addresses
# (17,000 each: a source address has some 28,000 ephemeral ports), one request each, all held
# open; prints the master's RSS, CPU and fds before, while they are open, and 10 s later, and
# whether a new client is still served. Needs python3 and root or a hard fd limit ≥ 17,100.
#
#   scripts/many_clients.sh [CLIENTS (51000)] [WORKERS (256)]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-51000} workers=${2:-256} per=17000
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
groups=()
cleanup() {
  # The master first, gracefully (it reaps its workers), then whatever is left.
  if [ -n "${master:-}" ] && kill -TERM "$master" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
  fi
  for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
printf '[worker]\nargs = ["--idle-timeout", "0"]\n' >"$tmp/c.toml"
XDG_RUNTIME_DIR=$tmp setsid "$bin" --config "$tmp/c.toml" -w "$workers" -l "127.0.0.1:$port" run \
  >"$tmp/log" 2>&1 </dev/null &
master=$!
disown
groups+=("$master")
for _ in $(seq 600); do
  [ "$(grep -c 'worker ready' "$tmp/log" || true)" -ge "$workers" ] && break
  sleep 0.1
done
show() {
  printf '%-22s master RSS %s KiB, CPU %s ticks, %s fds; %s connections established\n' "$1" \
    "$(awk '/VmRSS/ {print $2}' "/proc/$master/status")" \
    "$(awk '{print $14 + $15}' "/proc/$master/stat")" "$(ls "/proc/$master/fd" | wc -l)" \
    "$(ss -Htn state established "sport = :$port" | wc -l)"
}
show "before:"
n=0 i=2
while [ "$n" -lt "$clients" ]; do
  count=$((clients - n < per ? clients - n : per))
  setsid python3 bench/hold_clients.py "$port" "$count" "127.0.0.$i" 60 >"$tmp/clients-$i" 2>&1 &
  groups+=("$!")
  disown
  n=$((n + count)) i=$((i + 1))
done
for _ in $(seq 120); do
  [ "$(cat "$tmp"/clients-* 2>/dev/null | grep -c answered || true)" -ge $((i - 2)) ] && break
  sleep 1
done
cat "$tmp"/clients-*
show "all open:"
sleep 10
show "10 s later:"
curl -s -m 5 "http://127.0.0.1:$port/" || echo "a new client was not served"
