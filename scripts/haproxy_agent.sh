#!/usr/bin/env bash
# HAProxy in front of two rrbalancer "hosts" on loopback (issue 28, 3.), with the shipped
# contrib/haproxy/haproxy.cfg (ports and addresses rewritten for one machine): host A's 2 demo
# workers spend SLOW_MS of CPU per request, host B's none. Under `wrk` load through HAProxy it
# prints the weight each host's agent-check sets and the connections HAProxy sent each; then it
# stops A (`rrbalancer stop`, `[shutdown] drain = "1s"`) in the middle of a second run and prints
# that run's errors. Needs haproxy (2.6+) and wrk: `apt-get install -y haproxy wrk`.
#
#   scripts/haproxy_agent.sh [SLOW_MS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
slow_ms=${1:-3}
for tool in haproxy wrk python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y haproxy wrk" >&2; exit 2; }
done
cargo build --release --quiet
bin=$PWD/target/release/rrbalancer
tmp=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  [ -f "$tmp/hap.pid" ] && kill "$(cat "$tmp/hap.pid")" 2>/dev/null || true
  for h in A B; do
    [ -f "$tmp/$h.pid" ] && kill -KILL -- "-$(cat "$tmp/$h.pid")" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
# host NAME ARGS: a master with 2 demo workers (ARGS), its ports written to $tmp/NAME.ports.
host() {
  local listen metrics agent
  listen=$(free_port) metrics=$(free_port) agent=$(free_port)
  mkdir -p "$tmp/$1"
  cat > "$tmp/$1.toml" <<T
listen = ["127.0.0.1:$listen"]
workers = 2
[worker]
args = [$2]
[shutdown]
drain = "1s"
[metrics]
listen = "127.0.0.1:$metrics"
haproxy_agent = "127.0.0.1:$agent"
T
  echo "$listen $metrics $agent" > "$tmp/$1.ports"
  XDG_RUNTIME_DIR=$tmp/$1 setsid "$bin" --config "$tmp/$1.toml" run > "$tmp/$1.log" 2>&1 < /dev/null &
  echo $! > "$tmp/$1.pid"
  disown
}
host A "\"--slow-every\", \"1\", \"--slow-ms\", \"$slow_ms\""
host B '"--slow-every", "0"'
front=$(free_port)
python3 - "$tmp" "$front" <<'P'
import sys
tmp, front = sys.argv[1], sys.argv[2]
t = open('contrib/haproxy/haproxy.cfg').read()
t = t.replace('bind :80', f'bind 127.0.0.1:{front}')
t = t.replace('maxconn 4096', f'maxconn 4096\n    stats socket {tmp}/admin.sock mode 600 level admin')
t = t.replace('check port 9100 ', 'check ').replace('agent-port 9101 ', '')
t = '\n'.join(l for l in t.splitlines() if not l.strip().startswith('server host')) + '\n'
for name in 'AB':
    listen, metrics, agent = open(f'{tmp}/{name}.ports').read().split()
    t += f'    server {name} 127.0.0.1:{listen} port {metrics} agent-port {agent}\n'
open(f'{tmp}/haproxy.cfg', 'w').write(t)
P
sleep 1.5
haproxy -f "$tmp/haproxy.cfg" -D -p "$tmp/hap.pid" 2>&1 | grep -v NOTICE || true
sleep 2
stat() {
  python3 - "$tmp/admin.sock" <<'P'
import csv, io, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'show stat\n')
data = b''
while chunk := s.recv(65536):
    data += chunk
rows = list(csv.reader(io.StringIO(data.decode().lstrip('# '))))
head = rows[0]
for row in rows[1:]:
    if len(row) > 1 and row[1] in ('A', 'B'):
        x = dict(zip(head, row))
        print(f"  host {row[1]}: {x['status']:<5} weight {x['weight']:>3}  connections sent {x['stot']:>7}  agent {x['last_agt']!r}")
P
}
echo "== idle"; stat
echo "== wrk -t2 -c16 -d10s (Connection: close) through HAProxy; host A's workers burn ${slow_ms} ms per request"
wrk -t2 -c16 -d10s -H "Connection: close" "http://127.0.0.1:$front/" > "$tmp/wrk1" & w=$!
sleep 5; echo "-- after 5 s"; stat; wait $w
grep -E "Requests/sec|Socket errors|Non-2xx" "$tmp/wrk1" || true
echo "-- after 10 s"; stat
echo "== the same for 8 s; host A stopped (drain 1s) after 3 s"
wrk -t2 -c16 -d8s -H "Connection: close" "http://127.0.0.1:$front/" > "$tmp/wrk2" & w=$!
sleep 3; XDG_RUNTIME_DIR=$tmp/A "$bin" --config "$tmp/A.toml" stop 2>/dev/null; wait $w
grep -E "requests in|Socket errors|Non-2xx" "$tmp/wrk2" || true
grep -qE "Socket errors|Non-2xx" "$tmp/wrk2" || echo "  0 socket errors, 0 non-2xx"
stat
