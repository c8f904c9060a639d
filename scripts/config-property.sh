#!/usr/bin/env bash
# The property of tests/configs.rs over many generated configurations (default 1000): every
# configuration `check` accepts starts, reloads, scales and stops without a panic, in bounded
# time, leaving no process behind; every one it refuses, the master refuses too.
#
#   scripts/config-property.sh             # 1000 configurations, a fresh seed
#   scripts/config-property.sh 200         # fewer
#   RRB_CONFIG_SEED=42 scripts/config-property.sh   # a given seed (printed by every run)
#
# `cargo test` runs the same test over 40 configurations. A failure names its seed and case;
# RRB_CONFIG_SEED=<seed> RRB_CONFIG_CASE=<case> cargo test --test configs runs that one again.
# RRB_CONFIG_THREADS (default 4) sets how many run at once. About 2½ minutes on 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
RRB_CONFIG_CASES=${1:-1000} exec cargo test --test configs -- --nocapture
