#!/usr/bin/env bash
# A fleet of hosts on one machine (issue 28, 4.): HOSTS network namespaces on a bridge of their
# own, each running rrbalancer (2 demo workers, `[metrics]` on :9100, the HAProxy agent on :9101,
# `[shutdown] drain = DRAIN`), and HAProxy in front with the shipped contrib/haproxy/haproxy.cfg
# (only its bind address and server addresses rewritten). `wrk -c CLIENTS`, `Connection: close`,
# runs through HAProxy for SECONDS while a rolling operation goes across the hosts: host 1 is
# stopped (`rrbalancer stop`) and started again, host 2 upgraded twice (`rrbalancer upgrade`),
# host 3 reloaded (`rrbalancer reload`). Prints per run the requests, socket errors, non-2xx
# answers, each operation's outcome and each host's share of the connections HAProxy sent.
# Everything it made (namespaces, bridge, processes) is removed on exit.
#
# `--slow-ms N` makes host 1's workers burn N ms of CPU per request, and `--ops none` leaves the
# hosts alone: HAProxy's agent-check then sees host 1's workers busy, and the shares printed show
# it sent host 1 fewer new clients than the others; `--no-agent` takes the agent-check out of
# HAProxy's configuration, for comparison.
#
# Needs root (namespaces), ip (iproute2), haproxy 2.6+, wrk, python3 and curl:
#   apt-get install -y haproxy wrk iproute2 python3 curl
#
#   scripts/multihost.sh [--hosts N (3)] [--seconds S (24)] [--runs R (1)] [--drain D (2s)]
#                        [--clients C (32)] [--slow-ms N (0)] [--ops rolling|none (rolling)]
#                        [--no-agent] [--bin PATH (cargo build --release)]
#
# Exit status: 0 if every run had 0 socket errors, 0 non-2xx and every operation succeeded;
# 1 if not; 2 if something it needs is missing (the reason on stderr, starting with "needs").
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=3 seconds=24 runs=1 drain=2s clients=32 slow_ms=0 ops=rolling agent=1 bin=""
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --drain) drain=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --slow-ms) slow_ms=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --no-agent) agent=0; shift ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
need() { echo "needs $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || need "root, for network namespaces"
for tool in ip haproxy wrk python3 curl; do
  command -v "$tool" >/dev/null || need "$tool: apt-get install -y haproxy wrk iproute2 python3 curl"
done
[ "$hosts" -ge 3 ] || { echo "--hosts must be at least 3 (stop, upgrade, reload)" >&2; exit 2; }
case $ops in rolling|none) ;; *) echo "--ops is rolling or none" >&2; exit 2 ;; esac
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=$PWD/target/release/rrbalancer
fi

ip netns add "rrbprobe$$" 2>/dev/null && ip netns del "rrbprobe$$" \
  || need "network namespaces (ip netns add failed: root with CAP_NET_ADMIN and CAP_SYS_ADMIN)"

tmp=$(mktemp -d)
net=""
cleanup() {
  [ -f "$tmp/hap.pid" ] && kill "$(cat "$tmp/hap.pid")" 2>/dev/null || true
  if [ -n "$net" ]; then
    for h in $(seq "$hosts"); do
      ns=rrb${net}h$h
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "rrb${net}br" 2>/dev/null || true
  fi
  [ -n "${MULTIHOST_KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A /24 of 10.213.0.0/16 that no route on this machine uses, claimed by creating its bridge
# (which fails if another fleet made it first); names carry its third octet, so fleets can run
# side by side.
for i in $(seq 0 253); do
  n=$(( ($$ + i) % 254 + 1 ))
  [ -z "$(ip -4 route show to match "10.213.$n.1" 2>/dev/null | grep -v '^default')" ] || continue
  if ip link add "rrb${n}br" type bridge 2>/dev/null; then net=$n; break; fi
done
[ -n "$net" ] || { echo "no free 10.213.x.0/24 on this machine" >&2; exit 2; }
prefix=10.213.$net bridge=rrb${net}br
ip addr add "$prefix.1/24" dev "$bridge"
ip link set "$bridge" up
for h in $(seq "$hosts"); do
  ns=rrb${net}h$h
  ip netns add "$ns" || need "network namespaces (ip netns add failed)"
  ip link add "rrb${net}v$h" type veth peer name eth0 netns "$ns"
  ip link set "rrb${net}v$h" master "$bridge" up
  ip -n "$ns" addr add "$prefix.$((10 + h))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  mkdir -p "$tmp/h$h"
  {
    printf 'listen = ["%s:3000"]\nworkers = 2\nbacklog = 4096\n' "$prefix.$((10 + h))"
    if [ "$h" = 1 ] && [ "$slow_ms" != 0 ]; then
      printf '[worker]\nargs = ["--slow-every", "1", "--slow-ms", "%s"]\n' "$slow_ms"
    fi
    printf '[shutdown]\ndrain = "%s"\n' "$drain"
    printf '[metrics]\nlisten = "%s:9100"\nhaproxy_agent = "%s:9101"\nallow = ["%s.0/24"]\n' \
      "$prefix.$((10 + h))" "$prefix.$((10 + h))" "$prefix"
  } >"$tmp/h$h.toml"
done

# rrb HOST ARGS...: rrbalancer's client for that host's master (its control socket lives in
# $tmp/hHOST, reachable from here: a Unix socket path is not in a network namespace), given
# at most 60 s.
rrb() { local h=$1; shift; XDG_RUNTIME_DIR=$tmp/h$h timeout 60 "$bin" --config "$tmp/h$h.toml" "$@"; }
# launch HOST: its master, in its namespace, in the background.
launch() {
  XDG_RUNTIME_DIR=$tmp/h$1 setsid ip netns exec "rrb${net}h$1" "$bin" --config "$tmp/h$1.toml" run \
    >>"$tmp/h$1.log" 2>&1 </dev/null &
  disown
}
# ready HOST: waits (up to 20 s) until its /readyz answers 200 from here, through the bridge.
ready() {
  for _ in $(seq 200); do
    [ "$(curl -s -m1 -o /dev/null -w '%{http_code}' "http://$prefix.$((10 + $1)):9100/readyz")" = 200 ] \
      && return 0
    sleep 0.1
  done
  echo "host $1 not ready after 20 s; its log:" >&2; tail -20 "$tmp/h$1.log" >&2; return 1
}
for h in $(seq "$hosts"); do launch "$h"; done
for h in $(seq "$hosts"); do ready "$h"; done

front=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$tmp" "$front" "$prefix" "$hosts" "$agent" <<'P'
import re, sys
tmp, front, prefix, hosts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = open('contrib/haproxy/haproxy.cfg').read()
if sys.argv[5] == '0':
    t, n = re.subn(r' agent-check agent-port \d+ agent-inter \d+', '', t)
    assert n == 1, 'the agent-check settings moved in contrib/haproxy/haproxy.cfg'

t = t.replace('bind :80', f'bind 127.0.0.1:{front}')
t = t.replace('maxconn 4096', f'maxconn 4096\n    stats socket {tmp}/admin.sock mode 600 level admin', 1)
t = '\n'.join(l for l in t.splitlines() if not l.strip().startswith('server host')) + '\n'
for h in range(1, hosts + 1):
    t += f'    server host{h} {prefix}.{10 + h}:3000\n'
open(f'{tmp}/haproxy.cfg', 'w').write(t)
P
haproxy -q -f "$tmp/haproxy.cfg" -D -p "$tmp/hap.pid"
# hap up|sent: from HAProxy's stats socket, how many hosts it has UP, or "host1 N R E host2 ..."
# (per host so far: connections sent, retries and redispatches, failed connects).
cat >"$tmp/hap.py" <<'P'
import csv, io, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'show stat\n')
data = b''
while chunk := s.recv(65536):
    data += chunk
rows = list(csv.reader(io.StringIO(data.decode().lstrip('# '))))
hosts = [dict(zip(rows[0], r)) for r in rows[1:] if len(r) > 1 and r[1].startswith('host')]
if sys.argv[2] == 'up':
    print(sum(1 for h in hosts if h['status'] == 'UP'))
else:
    print(' '.join(f"{h['svname']} {h['stot']} {int(h['wretr'] or 0) + int(h['wredis'] or 0)} {h['econ'] or 0}"
                   for h in hosts))
P
hap() { python3 "$tmp/hap.py" "$tmp/admin.sock" "$1"; }
for _ in $(seq 100); do [ "$(hap up)" = "$hosts" ] && break; sleep 0.1; done

slow=""
[ "$slow_ms" = 0 ] || slow=", host 1's burning $slow_ms ms of CPU per request"
[ "$agent" = 1 ] || slow="$slow, no agent-check"
echo "fleet: $hosts hosts ($prefix.11-$((10 + hosts)), 2 demo workers each$slow, drain $drain), HAProxy $(haproxy -v | awk 'NR==1{print $3}') on 127.0.0.1:$front, wrk -c$clients for ${seconds}s per run"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# at PERCENT: sleeps until that share of the run has passed.
at() {
  local due=$(( start + seconds * 10 * $1 )) left
  left=$(( due - $(now_ms) ))
  [ "$left" -le 0 ] || sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
}
# op NAME COMMAND...: runs a rolling step, timed, its outcome appended to $tmp/ops.
op() {
  local name=$1 t0 rc=0 ms; shift
  t0=$(now_ms)
  "$@" >>"$tmp/op.log" 2>&1 || rc=$?
  ms=$(( $(now_ms) - t0 ))
  printf '%s: %s in %d ms\n' "$name" "$([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)")" \
    "$ms" >>"$tmp/ops"
}
stop_start() { rrb 1 stop && launch 1 && ready 1; }
failed=0
for run in $(seq "$runs"); do
  : >"$tmp/ops"
  before=$(hap sent)
  start=$(now_ms)
  wrk -t2 -c"$clients" -d"${seconds}s" --timeout 10s -H "Connection: close" \
    "http://127.0.0.1:$front/" >"$tmp/wrk" 2>&1 &
  w=$!
  if [ "$ops" = rolling ]; then
    at 12; op "host1 stopped and started again" stop_start
    at 45; op "host2 upgraded" rrb 2 upgrade
    at 62; op "host2 upgraded again" rrb 2 upgrade
    at 79; op "host3 reloaded" rrb 3 reload
  fi
  wait "$w" || true
  after=$(hap sent)
  requests=$(awk '/requests in/{print $1}' "$tmp/wrk")
  errors=$(awk -F'[ ,]+' '/Socket errors/{print $4+$6+$8+$10}' "$tmp/wrk")
  detail=$(sed -n 's/.*Socket errors: *//p' "$tmp/wrk")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$tmp/wrk")
  latency=$(awk '/Latency/{print "latency mean " $2 ", max " $4}' "$tmp/wrk")
  read -r shares retried <<<"$(python3 - "$before" "$after" <<'P'
import sys
def parse(s):
    w = s.split()
    return {w[i]: [int(x) for x in w[i + 1:i + 4]] for i in range(0, len(w), 4)}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
d = {k: [x - y for x, y in zip(v, b.get(k, [0, 0, 0]))] for k, v in a.items()}
total = sum(v[0] for v in d.values()) or 1
print(','.join(f'{k}={v[0]}({100 * v[0] / total:.0f}%)' for k, v in d.items()),
      f'retried={sum(v[1] for v in d.values())},connect_failed={sum(v[2] for v in d.values())}')
P
)"
  ops_failed=$(grep -c FAILED "$tmp/ops" || true)
  echo "run $run/$runs: ${requests:-0} requests, socket errors ${errors:-0}${detail:+ ($detail)}, non-2xx ${non2xx:-0}; $latency"
  echo "  HAProxy sent ${shares//,/ }; connections it retried or redispatched: $(echo "$retried" | sed 's/retried=//; s/,connect_failed=/, failed: /')"
  sed 's/^/  /' "$tmp/ops"
  echo "RESULT run=$run requests=${requests:-0} errors=${errors:-0} non2xx=${non2xx:-0} ops_failed=$ops_failed $(echo "$shares" | sed 's/([^)]*)//g') $retried"
  if [ "${errors:-0}" != 0 ] || [ "${non2xx:-0}" != 0 ] || [ "$ops_failed" != 0 ] || [ -z "$requests" ]; then
    failed=$((failed + 1))
    grep -iE "error|warn" "$tmp"/h*.log | tail -5 | sed 's/^/  log: /' || true
    tail -5 "$tmp/op.log" | sed 's/^/  op: /'
  fi
done
echo "$((runs - failed)) of $runs run(s) clean"
[ "$failed" = 0 ]
