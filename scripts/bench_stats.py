#!/usr/bin/env python
"""Time the protocol v2 bootstrap (merge_bench.bench.stats.bootstrap) at its target size.

Random 0/1 items for 13 methods × 6 tasks × 200 items, B = 2000, with one draw and with 3 draws (a pool of
9 tasks, each draw 6 of them, so tasks are shared between draws as in real runs); ``--spearman`` makes one
task per draw a Spearman task. The timed region is the whole ``bootstrap`` call (validation, index draws,
replicates, ranks, pairwise claims). Target: ≤ 2 s on 2 cores.

    nice -n 10 .venv/bin/python scripts/bench_stats.py [--B 2000] [--repeat 3] [--spearman]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from merge_bench.bench.draws import task_sets
from merge_bench.bench.stats import Draw, TaskItems, bootstrap


def make_task(rng: np.random.Generator, methods: list[str], n: int, spearman: bool) -> TaskItems:
    if spearman:
        gold = rng.integers(0, 6, n).astype(float)
        row = lambda s: np.column_stack([np.round(gold + rng.normal(0, s, n)), gold])
        return TaskItems("spearman", row(2.0), row(0.5), {m: row(rng.uniform(0.5, 2.0)) for m in methods})
    row = lambda p: (rng.random(n) < p).astype(float)
    return TaskItems("mean", row(0.5), row(0.9), {m: row(rng.uniform(0.6, 0.85)) for m in methods})


def make_draws(n_draws: int, n_methods: int, n_tasks: int, n: int, spearman: bool) -> list[Draw]:
    rng = np.random.default_rng(0)
    methods = ["simple_avg", *(f"method{i}" for i in range(1, n_methods))]
    pool = [f"task{i}" for i in range(n_tasks if n_draws == 1 else n_tasks + 3)]
    items = {t: make_task(rng, methods, n, spearman and i == 0) for i, t in enumerate(pool)}
    sets = task_sets(pool, [n_tasks], draws=n_draws, seed=0)[n_tasks]
    if spearman:                       # every draw holds the Spearman task
        sets = [s if "task0" in s else ["task0", *s[1:]] for s in sets]
    return [Draw({t: items[t] for t in s}) for s in sets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=2000)
    ap.add_argument("--methods", type=int, default=13)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spearman", action="store_true", help="one task per draw is a Spearman task")
    args = ap.parse_args()
    for n_draws in (1, 3):
        draws = make_draws(n_draws, args.methods, args.tasks, args.items, args.spearman)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = bootstrap(draws, B=args.B)
            times.append(time.perf_counter() - t0)
        print(f"{args.methods} methods × {args.tasks} tasks × {args.items} items, B = {args.B}, "
              f"{n_draws} draw(s){' (one Spearman task)' if args.spearman else ''}: "
              f"best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s; "
              f"leader {result.leader}, {sum(p.significant for p in result.pairs)} significant pairs")


if __name__ == "__main__":
    main()
