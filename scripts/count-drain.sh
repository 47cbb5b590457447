#!/usr/bin/env bash
# scripts/count-drain.sh SERVER_BIN DEVICES MESSAGES [CALLGRIND_OUT]
# One run of `sotto-bench fixed-drain` against SERVER_BIN (see
# bench/OPTIMISATIONS.md, #8). SOTTO_BENCH names the sotto-bench binary
# (default target/release/sotto-bench).
# Fresh data dir; with a 4th argument, runs the server under callgrind and
# zeroes its counters once the backlog is queued. Without, prints the
# server's CPU time (user+sys, all threads) spent in the drain.
set -euo pipefail
bin=$1; devices=$2; messages=$3; out=${4:-}
data=$(mktemp -d /tmp/drain-data.XXXXXX)
port=$((20000 + RANDOM % 20000))
if [ -n "$out" ]; then
  valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$out" "$bin" --listen 127.0.0.1:$port --data "$data" --no-rate-limits >/dev/null 2>"$out.log" &
else
  "$bin" --listen 127.0.0.1:$port --data "$data" --no-rate-limits >/dev/null 2>&1 &
fi
server=$!
# A failed run must not leave the server behind.
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
cpu="awk '{print \$14+\$15}' /proc/$server/stat"
if [ -n "$out" ]; then
  before="callgrind_control -z $server >/dev/null"; after="true"
else
  before="$cpu > $data.cpu0"; after="$cpu > $data.cpu1"
fi
"${SOTTO_BENCH:-target/release/sotto-bench}" fixed-drain --server 127.0.0.1:$port --devices $devices --messages $messages --before-drain "$before" --after-drain "$after"
kill -TERM $server; wait $server || true
if [ -z "$out" ]; then
  echo "server CPU in the drain: $(( $(cat $data.cpu1) - $(cat $data.cpu0) )) ticks (1/100 s)"
  rm -f $data.cpu0 $data.cpu1
fi
rm -rf "$data"
[ -n "$out" ] && grep -h "summary:" "$out" || true
