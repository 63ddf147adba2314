#!/usr/bin/env python3
"""Short sessions along a hidden chain of items, as CSV `user_id,item_id,weight,timestamp`.

Each user views `--length` consecutive items of one random permutation of the catalog, one a
minute. The next item follows from the last one alone: an item-to-item relation that item-kNN
and EASE learn from co-occurrence and a few dozen latent factors cannot hold. The same data
as the `tune` integration test's `chain_sessions`, at any size (standard library only).

Usage: chain_sessions.py --users 3000 --items 1500 --length 6 --seed 1 --out sessions.csv
"""
import argparse
import random


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--length", type=int, default=6)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    order = list(range(a.items))
    rng.shuffle(order)
    with open(a.out, "w") as f:
        f.write("user_id,item_id,weight,timestamp\n")
        for u in range(a.users):
            start = rng.randrange(a.items)
            t0 = 1_700_000_000 + u * 1000
            for k in range(a.length):
                f.write(f"{u},{order[(start + k) % a.items]},1,{t0 + 60 * k}\n")


if __name__ == "__main__":
    main()
