#!/usr/bin/env python3
"""Runs Vowpal Wabbit's --cb_explore_adf on a bandit_env.py environment and prints one JSON:
average reward, average regret against the optimal policy, decisions per second.

Same features as Bespoke's side: namespace C (context: c0..c7 dense, segment=s*), namespace A
(action: v0..v7 dense, kind=k*, id=a*), interactions -q CA; cost = -reward.
"""
import argparse
import json
import time

import numpy as np
from vowpalwabbit import Workspace

p = argparse.ArgumentParser()
p.add_argument("--env", required=True)
p.add_argument("--exploration", default="--squarecb", help='e.g. "--squarecb" or "--epsilon 0.05"')
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()

lines = open(a.env).read().splitlines()
pool = {x["id"]: x["features"] for x in json.loads(lines[0])["pool"]}
rounds = [json.loads(l) for l in lines[1:]]


def action_line(aid):
    f = pool[aid]
    dense = " ".join(f"v{i}:{x}" for i, x in enumerate(f["v"]))
    return f"|A {dense} kind={f['kind']} id={aid}"


action_text = {aid: action_line(aid) for aid in pool}
vw = Workspace(f"--cb_explore_adf {a.exploration} -q CA --quiet --random_seed {a.seed}")
rng = np.random.default_rng(a.seed)
total = regret = 0.0
start = time.perf_counter()
for r in rounds:
    c = r["context"]
    shared = "shared |C " + " ".join(f"c{i}:{x}" for i, x in enumerate(c["c"])) + f" segment={c['segment']}"
    ex = [shared] + [action_text[aid] for aid in r["actions"]]
    pmf = np.asarray(vw.predict(ex), dtype=float)
    pmf = pmf / pmf.sum()
    k = int(rng.choice(len(pmf), p=pmf))
    reward = 1.0 if r["u"][k] < r["p"][k] else 0.0
    total += reward
    regret += max(r["p"]) - r["p"][k]
    ex[k + 1] = f"0:{-reward}:{pmf[k]} " + ex[k + 1]
    vw.learn(ex)
elapsed = time.perf_counter() - start
n = len(rounds)
print(json.dumps({
    "learner": "vowpalwabbit " + a.exploration,
    "rounds": n,
    "average_reward": total / n,
    "average_regret": regret / n,
    "optimal_reward": sum(max(r["p"]) for r in rounds) / n,
    "decisions_per_second": n / elapsed,
}))
