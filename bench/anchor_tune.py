#!/usr/bin/env python3
"""Tune one anchor model (implicit ALS / BPR / cosine / BM25, cornac EASE) the way
`bespoke tune` tunes its models, so that the quality table compares tuned with tuned.

* Validation: split.py's rule applied to train.csv (each user's latest 20%, users with
  >= 5 rows), the test file never seen while choosing.
* Search: `--budget` configurations drawn independently at random (numpy, seeded) from the
  same spaces as `bespoke tune` (bespoke-algo/src/tune.rs, Config::from_unit; Bespoke draws
  them as a Latin hypercube per model type and then near the best so far, see
  docs/benchmarks.md):
    als    factors {32, 64, 128}, regularization log-uniform [0.01, 100],
           alpha {0.5, 1, 2, 5, 10}, 15 iterations, CG 3
    bpr    factors {32, 64, 128}, learning rate {0.01, 0.02, 0.05, 0.1},
           regularization {0.001, 0.01, 0.05}, 100 iterations
    cosine / bm25   K {25, 50, 100, 200, 400}
    ease   lambda log-uniform [10, 3000] (cornac's EASE, posB as cornac's default)
  each trained in full (plain random search: no early stopping, so the anchor gets at least
  as much training as Bespoke's successive halving gives its candidates).
* The best by validation NDCG@10 is retrained on all of train.csv and scored on test.csv with
  implicit_bench.py's own metric code. Prints one JSON object (implicit_bench's keys plus
  `tuning`).

With --select-on-test every configuration is trained on all of train.csv and the best *test*
NDCG@10 is kept: an optimistic anchor (the choice sees the test data), the most a user of the
library could get by picking hyperparameters by hand.

Usage: anchor_tune.py --train T --test T --model als --budget 16 [--seed 0] [--threads 2]
                      [--select-on-test]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHORS = os.environ.get("ANCHORS", os.path.join(HERE, "..", "..", "shared", "anchors"))
sys.path.insert(0, ANCHORS)
import implicit_bench as ib  # noqa: E402
import split as sp_split  # noqa: E402

K_MAX = 100


def sample(model, rng):
    if model == "als":
        return {"factors": int(rng.choice([32, 64, 128])),
                "regularization": float(np.exp(rng.uniform(np.log(0.01), np.log(100.0)))),
                "alpha": float(rng.choice([0.5, 1.0, 2.0, 5.0, 10.0])), "iterations": 15}
    if model == "bpr":
        return {"factors": int(rng.choice([32, 64, 128])),
                "learning_rate": float(rng.choice([0.01, 0.02, 0.05, 0.1])),
                "regularization": float(rng.choice([0.001, 0.01, 0.05])), "iterations": 100}
    if model in ("cosine", "bm25"):
        return {"knn_k": int(rng.choice([25, 50, 100, 200, 400]))}
    if model == "ease":
        return {"lambda": float(np.exp(rng.uniform(np.log(10.0), np.log(3000.0))))}
    raise ValueError(model)


class CornacEase:
    """cornac's EASE behind implicit's recommend() shape (scores for rows of W)."""

    def __init__(self, lamb):
        self.lamb = lamb

    def fit(self, W):
        import cornac
        from cornac.data import Dataset
        coo = W.tocoo()
        triples = list(zip(coo.row.tolist(), coo.col.tolist(), coo.data.astype(float).tolist()))
        self.ds = Dataset.from_uir(triples, seed=0)
        self.model = cornac.models.EASE(lamb=self.lamb, verbose=False)
        self.model.fit(self.ds)
        # cornac's own item order -> our item index
        n_items = W.shape[1]
        self.to_ours = np.full(self.ds.num_items, -1, dtype=np.int64)
        for raw, idx in self.ds.iid_map.items():
            self.to_ours[idx] = int(raw)
        self.n_items = n_items

    def recommend(self, users, W, N):
        ids = np.full((len(users), N), -1, dtype=np.int64)
        for r, u in enumerate(users):
            cu = self.ds.uid_map.get(int(u))
            scores = np.full(self.n_items, -np.inf, dtype=np.float64)
            if cu is not None:
                s = np.asarray(self.model.score(cu), dtype=np.float64)
                scores[self.to_ours] = s
            seen = W.indices[W.indptr[u]:W.indptr[u + 1]]
            scores[seen] = -np.inf
            top = np.argpartition(-scores, min(N, len(scores) - 1))[:N]
            top = top[np.argsort(-scores[top], kind="stable")]
            top = top[np.isfinite(scores[top])]
            ids[r, :len(top)] = top
        return ids


def fit_and_rank(model, params, W, eval_users, threads, seed):
    """Train on W, return (ranking of eval users, fit seconds)."""
    t0 = time.perf_counter()
    if model == "ease":
        m = CornacEase(params["lambda"])
        m.fit(W)
        fit_s = time.perf_counter() - t0
        return m.recommend(eval_users, W, K_MAX), fit_s
    a = argparse.Namespace(model=model, threads=threads, seed=seed, cg_steps=3,
                           factors=params.get("factors", 64),
                           regularization=params.get("regularization", 0.05),
                           iterations=params.get("iterations", 15),
                           learning_rate=params.get("learning_rate", 0.01),
                           knn_k=params.get("knn_k", 100))
    m = ib.make_model(a)
    if model == "als":
        X = W.copy()
        X.data = (1.0 + params["alpha"] * X.data).astype(np.float32)
    else:
        X = W
    m.fit(X, show_progress=False)
    fit_s = time.perf_counter() - t0
    ids, _ = m.recommend(eval_users, X[eval_users], N=K_MAX, filter_already_liked_items=True)
    return ids, fit_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--model", required=True, choices=["als", "bpr", "cosine", "bm25", "ease"])
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--select-on-test", action="store_true")
    a = p.parse_args(argv)
    rng = np.random.RandomState(a.seed)
    with threadpool_limits(limits=1, user_api="blas"):
        tr, te = ib.load(a.train, a.test)
        if a.select_on_test:
            _, _, Wv, eu_v, Tv = ib.build(tr, te)
        else:
            fit_df, valid_df, _ = sp_split.split(tr)
            _, _, Wv, eu_v, Tv = ib.build(fit_df, valid_df)
        trials = []
        best = None
        for t in range(a.budget):
            params = sample(a.model, rng)
            R, fit_s = fit_and_rank(a.model, params, Wv, eu_v, a.threads, a.seed)
            ndcg = ib.metrics_from_ranking(R, Tv)["ndcg@10"]
            trials.append({"params": params, "validation_ndcg@10": ndcg, "fit_s": round(fit_s, 3)})
            print(f"{a.model} {t + 1}/{a.budget} {ndcg:.5f} {params}", file=sys.stderr)
            if best is None or ndcg > best[0]:
                best = (ndcg, params)
        users, items, W, eval_users, T = ib.build(tr, te)
        R, fit_s = fit_and_rank(a.model, best[1], W, eval_users, a.threads, a.seed)
        metrics = ib.metrics_from_ranking(R, T)
    lib = "cornac" if a.model == "ease" else "implicit"
    res = {"library": lib, "model": a.model, "params": best[1], "fit_s": round(fit_s, 3),
           "metrics": metrics,
           "data": {"train": a.train, "test": a.test, "n_users": int(len(users)),
                    "n_items": int(len(items)), "n_eval_users": int(len(eval_users))},
           "tuning": {"budget": a.budget, "search": "random (same spaces as bespoke tune)",
                      "validation": ("the test data (--select-on-test: optimistic)" if a.select_on_test
                                     else "split.py's rule applied to train.csv"),
                      "best": {"params": best[1], "validation_ndcg@10": best[0]},
                      "trials": trials}}
    text = json.dumps(res)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
