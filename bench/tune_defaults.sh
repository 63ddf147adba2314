#!/usr/bin/env bash
# What `bespoke tune` reaches with its defaults, against explicit flags and against the best
# `implicit` model picked on the test split (an optimistic anchor), on split.py's splits.
#
#   DATASETS="ml100k sessions synth15k" bench/tune_defaults.sh   # then: python3 bench/tune_defaults.py
#
# Each dataset is $W/data/split_<name>/{train,test}.csv (docs/benchmarks.md has the commands
# that make them). Results go to $OUT/<name>/*.json, one JSON object per run.
set -euo pipefail
W=${W:-/tmp/bespoke-anchors}
PY=${PY:-$W/.venv/bin/python}
OUT=${OUT:-$W/tune_defaults}
BIN=${BIN:-./target/release/bespoke}
SEEDS=${SEEDS:-0}
ANCHOR_BUDGET=${ANCHOR_BUDGET:-16}
# Explicit flag sets, separated by ';': the best of them (mean over seeds) is the bar.
EXPLICIT=${EXPLICIT:---budget 60;--models als,ease --budget 30;--models bm25,cosine,rp3 --budget 30}
ANCHOR_MODELS=${ANCHOR_MODELS-als bpr cosine bm25}   # empty: no anchors (the 2M set)
for name in ${DATASETS:-ml100k}; do
  D=$W/data/split_$name
  mkdir -p "$OUT/$name"
  for s in $SEEDS; do
    /usr/bin/time -f '{"wall_s": %e, "max_rss_kb": %M}' -o "$OUT/$name/default_time_$s.json" \
      "$BIN" tune --train "$D/train.csv" --test "$D/test.csv" --seed "$s" --json \
      > "$OUT/$name/default_$s.json"
    IFS=';' read -ra flag_sets <<< "$EXPLICIT"
    for k in "${!flag_sets[@]}"; do
      # shellcheck disable=SC2086
      "$BIN" tune --train "$D/train.csv" --test "$D/test.csv" --seed "$s" ${flag_sets[$k]} \
        --json > "$OUT/$name/explicit_${k}_$s.json"
    done
  done
  for m in $ANCHOR_MODELS; do
    "$PY" bench/anchor_tune.py --train "$D/train.csv" --test "$D/test.csv" --model "$m" \
      --budget "$ANCHOR_BUDGET" --select-on-test --out "$OUT/$name/implicit_$m.json" 2>/dev/null \
      > /dev/null
  done
done
