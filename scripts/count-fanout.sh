#!/usr/bin/env bash
# scripts/count-fanout.sh SERVER_BIN DEVICES MESSAGES CALLGRIND_OUT
# One run of `sotto-bench fixed-fanout` against SERVER_BIN under callgrind
# (see bench/OPTIMISATIONS.md, "How #5–#7 were measured"): DEVICES
# recipients stay connected, one sender sends MESSAGES group messages one
# request at a time, every recipient acknowledges each in its own `Ack`.
# Callgrind's counters are zeroed once the group exists and the server's
# key directory has published the registrations, so the printed "summary:"
# is the sends, deliveries, acknowledgements and shutdown. Instructions per
# delivery = (count at M = 52 − count at M = 2) ÷ (50 × DEVICES), shutdown
# cancelled out.
# SOTTO_BENCH names the sotto-bench binary (default target/release/sotto-bench).
set -euo pipefail
bin=$1; devices=$2; messages=$3; out=$4
data=$(mktemp -d /tmp/fanout-data.XXXXXX)
port=$((20000 + RANDOM % 20000))
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen 127.0.0.1:$port --data "$data" --no-rate-limits >/dev/null 2>"$out.log" &
server=$!
# A failed run must not leave the server behind.
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
"${SOTTO_BENCH:-target/release/sotto-bench}" fixed-fanout --server 127.0.0.1:$port --devices $devices --messages $messages \
  --before-sends "callgrind_control -z $server >/dev/null" --after-sends true
kill -TERM $server; wait $server || true
rm -rf "$data"
grep -h "summary:" "$out"
