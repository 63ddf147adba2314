#!/usr/bin/env python3
"""Summarises bench/tune_defaults.sh: per dataset, the test NDCG@10 of `bespoke tune` with its
defaults (mean over seeds), with explicit flags, and of the best `implicit` model picked on the
test split, with the ratios. Prints a Markdown table and one JSON object per dataset.

Usage: tune_defaults.py [OUT]   (default /tmp/bespoke-anchors/tune_defaults)
"""
import glob
import json
import os
import sys


def load(path):
    """The last JSON line of a result file; None while the run is still writing it."""
    with open(path) as f:
        lines = f.read().strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def loaded(pattern):
    return [r for r in map(load, sorted(glob.glob(pattern))) if r is not None]


def flags(run):
    """The flags of a tune run, as the command line would give them."""
    t = run["tuning"]
    return f"--models {','.join(t['families'])} --budget {t['budget']}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bespoke-anchors/tune_defaults"
    rows = []
    for d in sorted(glob.glob(os.path.join(out, "*"))):
        name = os.path.basename(d)
        defaults = loaded(os.path.join(d, "default_[0-9]*.json"))
        explicit = {}
        for p in sorted(glob.glob(os.path.join(d, "explicit_*_*.json"))):
            if (r := load(p)) is not None:
                explicit.setdefault(os.path.basename(p).split("_")[1], []).append(r)
        times = loaded(os.path.join(d, "default_time_*.json"))
        anchors = loaded(os.path.join(d, "implicit_*.json"))
        if not defaults:
            continue
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        nd = mean([r["metrics"]["ndcg@10"] for r in defaults])
        # The best explicit flag set, by its mean over seeds.
        flag_means = {k: mean([r["metrics"]["ndcg@10"] for r in rs]) for k, rs in explicit.items()}
        best_flags = max(flag_means, key=flag_means.get) if flag_means else None
        ne = flag_means[best_flags] if best_flags else None
        best = max(anchors, key=lambda r: r["metrics"]["ndcg@10"]) if anchors else None
        row = {
            "dataset": name,
            "seeds": len(defaults),
            "default_ndcg@10": round(nd, 4),
            "default_choices": sorted({r["model"] for r in defaults}),
            "default_wall_s_max": max(t["wall_s"] for t in times) if times else None,
            "default_max_rss_mb_max": round(max(t["max_rss_kb"] for t in times) / 1024, 1)
            if times else None,
            "explicit_ndcg@10": round(ne, 4) if ne is not None else None,
            "explicit_flags": best_flags and flags(explicit[best_flags][0]),
            "explicit_means": {k: round(v, 4) for k, v in flag_means.items()},
            "default_over_explicit": round(nd / ne, 3) if ne else None,
            "implicit_best": best and best["model"],
            "implicit_best_params": best and best["params"],
            "implicit_best_ndcg@10": best and round(best["metrics"]["ndcg@10"], 4),
            "default_over_implicit": round(nd / best["metrics"]["ndcg@10"], 3) if best else None,
        }
        rows.append(row)
    print("| dataset | `bespoke tune` (defaults) | explicit flags | ratio | best `implicit`, picked on test | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['default_ndcg@10']} ({', '.join(r['default_choices'])}; "
              f"{r['seeds']} seed(s)) | {r['explicit_ndcg@10']} (`{r['explicit_flags']}`) | {r['default_over_explicit']} | "
              f"{r['implicit_best_ndcg@10']} ({r['implicit_best']}) | {r['default_over_implicit']} |")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
