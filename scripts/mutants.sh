#!/usr/bin/env bash
# Mutation testing of the decision code with cargo-mutants: each mutant (an operator flipped, a
# function body replaced by a default) is built and the unit tests and simulators run against
# it; a mutant that no test kills is a behaviour nothing checks.
#
#   scripts/mutants.sh                      # the core's decision files (below), one after another
#   scripts/mutants.sh src/engine/ledger.rs # chosen files
#   MUTANTS_JOBS=1 scripts/mutants.sh       # one build at a time (default 2: a 2-core machine)
#
# Installs cargo-mutants (`cargo install cargo-mutants --locked`) when missing. Two mutants are
# built and tested at once (each in its own copy of the tree), which on 2 cores takes ~8 s a
# mutant against ~12 s for one at a time. Of src/config/, the files that decide whether a file is
# accepted (the rest is types, serde glue and printing). Results per file, with the missed
# mutants listed, go to target/mutants/<file>/ and a line each is printed at the end. Mutants
# that are equivalent or untestable by design are excluded in .cargo/mutants.toml, each with
# its reason. Integration tests are not run here (they start processes): the decisions are
# meant to be caught by the unit tests and the seeded simulators.
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(
    src/engine/restart.rs
    src/engine/dispatch.rs
    src/engine/mix.rs
    src/engine/ledger.rs
    src/engine/stats.rs
    src/engine/lifecycle.rs
    src/engine/limits.rs
    src/engine/stop_signal.rs
    src/engine/reconfigure.rs
    src/engine/recycle.rs
    src/engine/relay.rs
    src/engine/reload.rs
    src/engine/supervisor/mod.rs
    src/engine/supervisor/reloading.rs
    src/engine/supervisor/recycling.rs
    src/engine/supervisor/deadline.rs
    src/engine/upgrade.rs
    src/engine/log_ring.rs
    src/engine/watch.rs
    src/config/check.rs
    src/config/validate.rs
    src/config/command.rs
    src/config/sections.rs
    src/config/probe.rs
    src/config/wording.rs
    src/config/program.rs
)
jobs=${MUTANTS_JOBS:-2}
if ! command -v cargo-mutants >/dev/null; then
    echo "installing cargo-mutants (cargo install cargo-mutants --locked)…" >&2
    cargo install cargo-mutants --locked >&2
fi
summary=()
for file in "${files[@]}"; do
    out="target/mutants/$(echo "${file#src/}" | sed 's|/|-|g; s|\.rs$||')"
    mkdir -p "$out"
    echo "== $file"
    # Exit code 2 (some mutants were missed) or 3 (some timed out): results, not failures of
    # the script.
    cargo mutants -f "$file" --jobs "$jobs" --timeout 60 -o "$out" -- --lib || { rc=$?; [ $rc -eq 2 ] || [ $rc -eq 3 ]; }
    dir="$out/mutants.out"
    caught=$(wc -l <"$dir/caught.txt")
    missed=$(wc -l <"$dir/missed.txt")
    timeout=$(wc -l <"$dir/timeout.txt")
    unviable=$(wc -l <"$dir/unviable.txt")
    viable=$((caught + missed + timeout))
    score=$([ "$viable" -gt 0 ] && echo "$(((caught + timeout) * 100 / viable))%" || echo "-")
    summary+=("$file: $score of $viable viable mutants caught ($missed missed, $timeout timed out, $unviable unviable)")
    if [ "$missed" -gt 0 ]; then sed 's/^/  missed: /' "$dir/missed.txt"; fi
done
printf '%s\n' "${summary[@]}"
