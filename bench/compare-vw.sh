#!/usr/bin/env bash
# Bespoke's contextual-bandit learner against Vowpal Wabbit's --cb_explore_adf, side by side on
# the same synthetic environments (bench/bandit_env.py), same features, same exploration
# budget, 100k rounds each. Prints one JSON line per run; docs/benchmarks.md has the figures.
#   PY=/tmp/bespoke-anchors/.venv/bin/python bench/compare-vw.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/bespoke-anchors/.venv/bin/python}
BIN=${BIN:-target/release/bespoke}
WORK=${WORK:-/tmp/bespoke-vw}
SEEDS=${SEEDS:-"7 8 9"}
ROUNDS=${ROUNDS:-100000}
mkdir -p "$WORK"
cargo build --release -q -p bespoke-cli
for seed in $SEEDS; do
  env="$WORK/env_$seed.jsonl"
  [ -f "$env" ] || "$PY" bench/bandit_env.py --rounds "$ROUNDS" --seed "$seed" --out "$env"
  # Same exploration budget: SquareCB with VW's defaults (gamma_scale 10, exponent 0.5), then
  # epsilon-greedy at 5%.
  echo "{\"env_seed\": $seed, \"run\": $("$BIN" bench bandit --env "$env" | tr -d '\n')}"
  echo "{\"env_seed\": $seed, \"run\": $("$PY" bench/bandit_vw.py --env "$env" --exploration="--squarecb")}"
  echo "{\"env_seed\": $seed, \"run\": $("$BIN" bench bandit --env "$env" --learner '{"exploration":{"policy":"epsilon_greedy","epsilon":0.05}}' | tr -d '\n')}"
  echo "{\"env_seed\": $seed, \"run\": $("$PY" bench/bandit_vw.py --env "$env" --exploration="--epsilon 0.05")}"
done
