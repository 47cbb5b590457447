#!/usr/bin/env bash
# Long versions of the fault tests, too slow for every `cargo test`:
#   - the crash harness: 100 SIGKILL/restart cycles of the real sotto-server
#     binary under continuous sends (SOTTO_CRASH_CYCLES);
#   - the seeded simulation: 1000 seeds of clients and server over a faulty
#     network (SOTTO_SIM_SEEDS; SOTTO_SIM_FIRST_SEED shifts the range).
# Each run is bounded by `timeout`. Usage:
#   scripts/long-runs.sh            # both
#   scripts/long-runs.sh crash      # only the crash harness
#   scripts/long-runs.sh sim        # only the simulation
# Override the sizes with the same variables, e.g.
#   SOTTO_CRASH_CYCLES=500 SOTTO_SIM_SEEDS=5000 scripts/long-runs.sh
# A failing simulation seed is printed with the command that replays it
# (SOTTO_SIM_SEED=n); a crash run prints its seed (SOTTO_CRASH_SEED=n).
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
crash_cycles="${SOTTO_CRASH_CYCLES:-100}"
sim_seeds="${SOTTO_SIM_SEEDS:-1000}"
# Generous upper bounds: about 1 s per crash cycle and 2 s per seed, doubled.
crash_limit=$((crash_cycles * 4 + 300))
sim_limit=$((sim_seeds * 4 + 300))

# The crash harness runs the real server binary: build it first.
cargo build -p sotto-server
cargo test -p sotto-testkit --no-run --test crash --test simulation

status=0
if [[ "$what" == all || "$what" == crash ]]; then
    echo "== crash harness: $crash_cycles cycles (limit ${crash_limit}s)"
    SOTTO_CRASH_CYCLES="$crash_cycles" timeout "$crash_limit" \
        cargo test -p sotto-testkit --test crash -- --nocapture || status=1
fi
if [[ "$what" == all || "$what" == sim ]]; then
    echo "== simulation: $sim_seeds seeds from ${SOTTO_SIM_FIRST_SEED:-0} (limit ${sim_limit}s)"
    SOTTO_SIM_SEEDS="$sim_seeds" timeout "$sim_limit" \
        cargo test -p sotto-testkit --test simulation -- --nocapture || status=1
fi
exit "$status"
