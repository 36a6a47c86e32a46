#!/usr/bin/env python
"""Build a rehearsal mirror of a real backbone: random-weight stand-ins for its base model and adapters
under DIR/<hub id>/ (merge_bench.backbones.rehearsal), then print how to run the benchmark on it offline.

    python scripts/make_rehearsal_mirror.py --backbone flan --out /tmp/mirror [--seed 0]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True,
                    help="flan-t5-large, llama-3.2-3b-instruct or mistral-7b-instruct-v0.2 (or flan, llama, mistral)")
    ap.add_argument("--out", required=True, type=Path, help="the mirror folder (MERGE_BENCH_MODELS)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = ap.parse_args()

    from merge_bench.backbones.rehearsal import build_mirror

    start = time.perf_counter()
    mirror = build_mirror(args.backbone, args.out, seed=args.seed)
    print(f"mirror of {args.backbone} in {mirror} ({time.perf_counter() - start:.1f} s)")
    print("run the benchmark on it with:")
    print(f"  MERGE_BENCH_MODELS={mirror} MERGE_BENCH_DATA_DIR={REPO / 'tests' / 'fixtures'} HF_HUB_OFFLINE=1 "
          f"merge-bench run --backbone {args.backbone}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
