"""Seed the leaderboard's protocol-v2 entries for the embedded backbone: one sweep per size, every
method, then rebuild the tables, page and plots.

    .venv/bin/python scripts/seed_leaderboard.py --sizes 2 4 6 --draws 3

Each size runs as its own sweep (its draws are the first N tasks of seeded permutations of the pool,
the same as in a combined `run --n-tasks 2,4,6`), and its entries are written as soon as it finishes,
so a seeding cut short by the end of a session keeps what it finished. Evaluation results are cached
by content hash: the pretrained and LoRA rows are computed once, and an interrupted size resumes where
it stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from merge_bench.bench.run import RunConfig
from merge_bench.bench.sweep import run_sweep
from merge_bench.leaderboard.build import build_leaderboard
from merge_bench.leaderboard.store import default_root
from merge_bench.leaderboard.submit import write_sweep_entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, required=True, metavar="N", help="task-set sizes, in order")
    parser.add_argument("--draws", default="3", help="draws per size, or 'all'")
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--root", type=Path, default=default_root())
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    draws = args.draws if args.draws == "all" else int(args.draws)
    for n in args.sizes:
        record = run_sweep(RunConfig(backbone=args.backbone, sizes=[n], draws=draws, methods=args.methods,
                                     out=args.out))
        for result in write_sweep_entries(args.root, record):
            print(result.status, result.path, flush=True)
    for path in build_leaderboard(args.root):
        print("built", path)


if __name__ == "__main__":
    main()
