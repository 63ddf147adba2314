#!/usr/bin/env bash
# Side-by-side iALS comparison with the Python library `implicit` on the anchors' synthetic
# sets (../shared/anchors/README.md), interleaved runs, same data, hyperparameters and threads.
# Prints one JSON summary (medians and ratios); raw JSON per run goes to $WORK/out/compare.
#
#   SIZE=2m RUNS=3 bench/compare-implicit.sh              # iALS; needs the anchors' venv and split
#   SIZE=2m RUNS=3 MODEL=bm25 bench/compare-implicit.sh   # or cosine: item-kNN with K = 100
set -euo pipefail
WORK=${WORK:-/tmp/bespoke-anchors}
PY=${PY:-$WORK/.venv/bin/python}
SIZE=${SIZE:-2m}
MODEL=${MODEL:-als}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
BESPOKE=${BESPOKE:-./target/release/bespoke}
SPLIT=$WORK/data/split_$SIZE
OUT=$WORK/out/compare
mkdir -p "$OUT"
if [ "$MODEL" = als ]; then
  PARAMS=(--factors 64 --iterations 15 --regularization 0.05 --alpha 1.0 --cg-steps 3 --threads "$THREADS")
else
  PARAMS=(--knn-k 100 --threads "$THREADS")
fi
for r in $(seq 1 "$RUNS"); do
  "$PY" ../shared/anchors/implicit_bench.py --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
    --model "$MODEL" "${PARAMS[@]}" --out "$OUT/implicit_${MODEL}_${SIZE}_$r.json" > /dev/null
  "$BESPOKE" eval --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
    --models "$MODEL" "${PARAMS[@]}" --json --out "$OUT/bespoke_${MODEL}_${SIZE}_$r.json" > /dev/null
done
"$PY" - "$OUT" "$SIZE" "$RUNS" "$MODEL" <<'PYEOF'
import json, statistics, sys
out, size, runs, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def load(lib):
    return [json.load(open(f"{out}/{lib}_{model}_{size}_{r}.json")) for r in range(1, runs + 1)]
imp, bes = load("implicit"), load("bespoke")
def med(rows, f):
    return statistics.median(f(r) for r in rows)
keys = {
    "fit_s": lambda r: r["fit_s"],
    "ndcg@10": lambda r: r["metrics"]["ndcg@10"],
    "recall@20": lambda r: r["metrics"]["recall@20"],
    "ndcg@100": lambda r: r["metrics"]["ndcg@100"],
    "latency_us_median": lambda r: r["single_user_latency_us"]["median"],
    "batch_users_per_s": lambda r: r["batch_recommend"]["users_per_s"],
    "peak_rss_mb": lambda r: r["peak_rss_mb"],
}
summary = {"model": model, "size": size, "runs": runs, "implicit": {}, "bespoke": {}, "ratio_bespoke_over_implicit": {}}
for k, f in keys.items():
    a, b = med(imp, f), med(bes, f)
    summary["implicit"][k], summary["bespoke"][k] = a, b
    summary["ratio_bespoke_over_implicit"][k] = round(b / a, 3) if a else None
summary["fit_s_all"] = {"implicit": [r["fit_s"] for r in imp], "bespoke": [r["fit_s"] for r in bes]}
print(json.dumps(summary, indent=1))
PYEOF
