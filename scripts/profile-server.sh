#!/usr/bin/env bash
# Profiles sotto-server under the W2 load with perf and prints the hottest
# symbols (inclusive and self). Needs `perf` (Debian: linux-perf).
#
#   scripts/profile-server.sh [WORKLOAD]     # default w2; e.g. w3, w4
#
# Output: target/profile/<workload>.perf.data and a text summary next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:-w2}
cargo build --profile profiling -p sotto-server -p sotto-bench
out=target/profile
mkdir -p "$out"
./target/profiling/sotto-bench --quick --only "$workload" --no-criterion \
    --server-bin target/profiling/sotto-server --out "$out/report-$workload" &
bench=$!
# The bench starts one sotto-server for the workload; attach to it.
for _ in $(seq 1 600); do
    pid=$(pgrep -n -x sotto-server || true)
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "${pid:-}" ] || { echo "no sotto-server started" >&2; exit 1; }
perf record -F 499 -g --call-graph dwarf,16384 -p "$pid" -o "$out/$workload.perf.data" 2>/dev/null &
perf_pid=$!
wait "$bench" || true
wait "$perf_pid" || true
perf report -i "$out/$workload.perf.data" --no-children --stdio --percent-limit 1 \
    --sort symbol 2>/dev/null | grep -v '^$' | head -80 > "$out/$workload.self.txt"
perf report -i "$out/$workload.perf.data" --children --stdio --percent-limit 3 \
    --sort symbol -g none 2>/dev/null | grep -v '^$' | head -80 > "$out/$workload.children.txt"
echo "self time:      $out/$workload.self.txt"
echo "inclusive time: $out/$workload.children.txt"
