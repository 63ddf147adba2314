#!/usr/bin/env python3
"""Synthetic contextual-bandit environment with a known optimal policy.

Writes one JSON object per round: the context features, the ids of the K actions offered, each
offered action's click probability and a uniform draw per action (so that every learner sees the
same rewards for the same choices). A reward is 1 when `u[a] < p[a]`.

Model (documented in docs/benchmarks.md):
- context: 8 dense features c ~ N(0, 1) and one categorical `segment` of 6;
- a pool of 50 actions, each with 8 dense features v ~ N(0, 1) and a categorical `kind` of 5;
- K = 10 actions offered per round, drawn from the pool without replacement;
- click probability p = sigmoid(-2.5 + 1.2 * cᵀ W v + T[segment, kind] + 0.3 * b_a), with W
  8x8 ~ N(0, 1/8), T 6x5 ~ N(0, 1), b_a ~ N(0, 1): the bilinear and table terms can only be
  learned through context x action interactions.
"""
import argparse
import json

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=100_000)
p.add_argument("--seed", type=int, default=7)
p.add_argument("--out", required=True)
a = p.parse_args()

rng = np.random.default_rng(a.seed)
DC, DA, SEG, KIND, POOL, K = 8, 8, 6, 5, 50, 10
W = rng.normal(0, 1 / np.sqrt(DC), (DC, DA))
T = rng.normal(0, 1, (SEG, KIND))
V = rng.normal(0, 1, (POOL, DA))
kind = rng.integers(0, KIND, POOL)
bias = rng.normal(0, 1, POOL)

with open(a.out, "w") as f:
    f.write(json.dumps({"pool": [
        {"id": f"a{i}", "features": {"v": [round(float(x), 4) for x in V[i]], "kind": f"k{kind[i]}"}}
        for i in range(POOL)
    ]}) + "\n")
    for t in range(a.rounds):
        c = np.round(rng.normal(0, 1, DC), 4)
        seg = int(rng.integers(0, SEG))
        offered = rng.choice(POOL, K, replace=False)
        z = -2.5 + 1.2 * (c @ W @ V[offered].T) + T[seg, kind[offered]] + 0.3 * bias[offered]
        prob = 1 / (1 + np.exp(-z))
        u = rng.random(K)
        f.write(json.dumps({
            "context": {"c": c.tolist(), "segment": f"s{seg}"},
            "actions": [f"a{i}" for i in offered],
            "p": np.round(prob, 6).tolist(),
            "u": np.round(u, 6).tolist(),
        }) + "\n")
