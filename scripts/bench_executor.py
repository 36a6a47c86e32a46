"""The same job list through the sequential executor and through Ray (issue 14), on this machine.

    .venv/bin/python scripts/bench_executor.py                      # tiny, 2 tasks, the default methods
    .venv/bin/python scripts/bench_executor.py --backbone micro     # seconds, for a smoke run

Each executor evaluates into a fresh result cache (the base model's conversion is shared and done first), so
both do every evaluation. The sequential run uses torch's threads (all cores); Ray starts a local cluster with
``--workers`` actors of cores/workers threads each. Prints wall seconds, evaluations per minute and the
ratio sequential / ray (> 1: Ray is faster), and checks that the records hold the same scores. ``--scaling``
also runs Ray with one worker of one thread, for the scaling efficiency of k workers (speedup / k).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: idle OpenMP threads must not spin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--n-tasks", type=int, default=2)
    ap.add_argument("--methods", default=None, help="comma-separated (default: the default method set)")
    ap.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scaling", action="store_true", help="also Ray with 1 worker of 1 thread: k workers against 1")
    args = ap.parse_args()

    from tabulate import tabulate

    from merge_bench.backbones import get_backbone
    from merge_bench.bench.plan import ExecutorConfig
    from merge_bench.bench.run import RunConfig, run_benchmark

    bb = get_backbone(args.backbone)
    if bb.local_base:
        bb.local_base()  # the one-time conversion is nobody's cost
    tmp = Path(tempfile.mkdtemp(prefix="merge-bench-bench-executor-"))
    common = dict(backbone=args.backbone, n_tasks=args.n_tasks, limit=args.limit, out=tmp / "runs", device="cpu",
                  backend="hf", methods=args.methods.split(",") if args.methods else None)
    runs = [("sequential", ExecutorConfig(), None), ("ray", ExecutorConfig("ray", workers=args.workers), None)]
    if args.scaling:  # one actor of one thread on a one-CPU cluster: the base of the scaling efficiency
        runs.append(("ray, 1 worker", ExecutorConfig("ray", workers=1), 1))
    rows, records, walls = [], {}, {}
    for name, ex, cpus in runs:
        start = time.perf_counter()  # a cluster's start counts: the user waits for it too
        if cpus is not None:
            import ray

            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        records[name] = run_benchmark(RunConfig(cache_dir=tmp / name, executor=ex, **common), backbone=bb,
                                      progress=False)
        walls[name] = time.perf_counter() - start
        if cpus is not None:
            ray.shutdown()
        n = sum(1 for _ in (tmp / name).rglob("*.json"))
        info = records[name]["executor"]
        rows.append([name, info["workers"], info.get("threads_per_worker") or os.cpu_count(), n,
                     f"{walls[name]:.1f}", f"{60 * n / walls[name]:.1f}"])
    first = records["sequential"]
    same = all(r[k] == first[k] for r in records.values() for k in ("pretrained", "lora", "per_item"))
    print(tabulate(rows, headers=["executor", "workers", "threads each", "evaluations", "wall s", "eval/min"]))
    print(f"sequential / ray wall: {walls['sequential'] / walls['ray']:.2f}x; scores identical: {same}; "
          f"{os.cpu_count()} cores")
    if args.scaling:
        speedup = walls["ray, 1 worker"] / walls["ray"]
        print(f"ray {args.workers} workers against 1 (1 thread each): {speedup:.2f}x, "
              f"efficiency {speedup / args.workers:.2f} (target >= 0.8)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
