#!/bin/bash
# Two builds of bespoke served one at a time on one port, alternated, one wrk run each turn:
# the before/after comparison of docs/benchmarks.md ("HTTP recommendations at 20k items").
#
#   A_BIN=... A_DIR=... A_KEY=... B_BIN=... B_DIR=... B_KEY=... [ROUNDS=3] [SECS=15] bench/ab-wrk.sh
#
# Each store must already hold a trained model and a read key (`bespoke keys create` before
# the server starts: a running server does not see keys created behind it). Extra settings
# come from the environment (BESPOKE_CONFIG, BESPOKE__...), as for `bespoke serve`.
set -euo pipefail
: "${A_BIN:?}" "${A_DIR:?}" "${A_KEY:?}" "${B_BIN:?}" "${B_DIR:?}" "${B_KEY:?}"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-15}
PORT=${PORT:-8095}
export BESPOKE__TRAINING__TRAIN_ON_START=false BESPOKE__TRAINING__INTERVAL_MINUTES=0
export BESPOKE__TRAINING__TUNE_INTERVAL_HOURS=0
cd "$(dirname "$0")/.."
for _ in $(seq "$ROUNDS"); do
  for which in A B; do
    bin=${which}_BIN dir=${which}_DIR key=${which}_KEY
    "${!bin}" --data-dir "${!dir}" serve --bind "127.0.0.1:$PORT" > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
    BESPOKE_KEY=${!key} wrk -t2 -c32 -d3s -s bench/wrk-recommend.lua "http://127.0.0.1:$PORT" > /dev/null
    echo "$which $(BESPOKE_KEY=${!key} wrk -t2 -c32 -d"${SECS}"s -s bench/wrk-recommend.lua "http://127.0.0.1:$PORT" | tail -1)"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
