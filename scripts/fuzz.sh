#!/usr/bin/env bash
# Fuzzes the master's readers of untrusted bytes with cargo-fuzz (libFuzzer), each target for
# SECONDS (default 60):
#
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 600        # every target, 10 minutes each
#   scripts/fuzz.sh 30 config  # one target
#
# Targets (fuzz/fuzz_targets/): native_channel (a native worker's messages), node_channel (a
# Node worker's IPC stream, node and node-cluster), control_request (the control socket),
# config (a config file, parsed and validated), upgrade_channel (what a new master says to the old
# one during an upgrade). Seeds are in fuzz/seeds/<target>; what the
# fuzzer finds grows fuzz/corpus/<target> (not committed). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script fail: keep that input as a regression test.
#
# Needs the nightly toolchain (the crate itself builds on stable) and cargo-fuzz, installed
# with `cargo install cargo-fuzz` when missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(native_channel node_channel control_request config upgrade_channel)
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)…" >&2
  cargo install cargo-fuzz --locked >&2
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${seconds}s" >&2
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+ +DONE|Done [0-9]+ runs|SUMMARY|panicked' "$log" >&2 || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "fuzz.sh: $t failed (exit $status); a crash input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  rm -f "$log"
done
