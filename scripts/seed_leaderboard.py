"""Seed the leaderboard's embedded-backbone entries: run the protocol on several task-set sizes and
write one validated entry per method, then rebuild the tables, page and plots.

    .venv/bin/python scripts/seed_leaderboard.py --sizes 2:all 4:simple_avg,ties,star 6:...

Each size K draws K of the tiny tasks with seed 42 (as `merge-bench run --n-tasks K` does). Evaluation
results are cached by content hash, so the pretrained and LoRA rows are computed once and an
interrupted seeding resumes where it stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from merge_bench.leaderboard.build import build_leaderboard
from merge_bench.leaderboard.convert import entries_from_record
from merge_bench.leaderboard.store import default_root, write_entry
from merge_bench.bench.run import RunConfig, run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", required=True, metavar="K:METHODS",
                        help="task-set size and its methods ('all' or comma-separated)")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--root", type=Path, default=default_root())
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    for item in args.sizes:
        k, _, methods = item.partition(":")
        names = ["all"] if methods in ("", "all") else methods.split(",")
        record = run_benchmark(RunConfig(backbone=args.backbone, n_tasks=int(k), methods=names, out=args.out))
        for entry in entries_from_record(record):
            print("wrote", write_entry(args.root, entry))
    for path in build_leaderboard(args.root):
        print("built", path)


if __name__ == "__main__":
    main()
