"""Where the time of `merge-bench run` goes: the generate calls (the FLOP floor of the evaluation) against
everything else (lm-eval's per-call task building, PEFT's LoRA layers, merges, weight swaps, hashing).

    python scripts/profile_run.py [--n-tasks K] [--methods m1,m2] [--limit N] [--cold]

Each stage is timed by wrapping the function that does it; stages nest (generate runs inside evaluate),
so the table gives "evaluate, outside generate" as its own row. ``--cold`` uses an empty cache root (the
tiny base is converted again); otherwise the result cache is a fresh temporary folder and the converted
base is reused, so every evaluation runs.
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(owner, attr: str, label: str) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            CALLS[label] += 1

    setattr(owner, attr, wrapper)


def timed_context(owner, attr: str, label: str) -> None:
    """For a method returning a context manager: time entering and leaving it, not its body."""
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        cm = original(*args, **kwargs)
        enter = cm.__enter__

        class Timed:
            def __enter__(self_inner):
                value = enter()
                TIMES[label] += time.perf_counter() - start
                CALLS[label] += 1
                return value

            def __exit__(self_inner, *exc):
                t0 = time.perf_counter()
                try:
                    return cm.__exit__(*exc)
                finally:
                    TIMES[label] += time.perf_counter() - t0

        return Timed()

    setattr(owner, attr, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-tasks", type=int)
    ap.add_argument("--methods", help="comma-separated (default: the default set)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--cold", action="store_true", help="empty cache root: convert the tiny base too")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tmp = Path(tempfile.mkdtemp(prefix="merge-bench-profile-"))
    if args.cold:
        os.environ["MERGE_BENCH_CACHE"] = str(tmp / "cache")

    import lm_eval.models.huggingface as hf
    import lm_eval.tasks as lm_tasks

    from merge_bench.backbones import tiny
    from merge_bench.bench import run as run_mod
    from merge_bench.bench import worker
    from merge_bench.evaluation import harness
    from merge_bench.evaluation.hf_backend import HFEvaluator
    from merge_bench.merging import engine

    timed(hf.HFLM, "_model_generate", "generate (the floor)")
    timed(lm_tasks.TaskManager, "load", "lm-eval task building")
    timed(harness, "run_lm_eval", "evaluate (lm-eval call)")
    timed(worker, "merge_variant", "merge")
    timed(engine.MergeResult, "apply_to", "apply merged delta")
    timed(engine.AppliedMerge, "restore", "restore base weights")
    timed_context(HFEvaluator, "lora", "LoRA in/out (PEFT)")
    timed(run_mod, "dir_sha256", "hashing inputs")
    timed(tiny, "ensure_tiny_base", "tiny base (convert or verify)")
    timed(HFEvaluator, "__init__", "load base model")
    timed(worker, "merged_sha256", "hash merged deltas")
    # harness imported run_lm_eval into the backends by name: patch those references too.
    import merge_bench.evaluation.hf_backend as hf_backend
    hf_backend.run_lm_eval = harness.run_lm_eval

    from merge_bench.bench.plan import RunConfig

    cfg = RunConfig(n_tasks=args.n_tasks, methods=args.methods.split(",") if args.methods else None,
                    limit=args.limit, out=tmp / "runs", cache_dir=tmp / "results", device="cpu", backend="hf")
    start = time.perf_counter()
    run_mod.run_benchmark(cfg)
    total = time.perf_counter() - start

    rows = [[label, CALLS[label], f"{TIMES[label]:.1f}", f"{100 * TIMES[label] / total:.1f}"]
            for label in sorted(TIMES, key=TIMES.get, reverse=True)]
    outside = TIMES["evaluate (lm-eval call)"] - TIMES["generate (the floor)"] - TIMES["lm-eval task building"]
    rows.append(["evaluate, outside generate and task building", "", f"{outside:.1f}", f"{100 * outside / total:.1f}"])
    rows.append(["total wall", "", f"{total:.1f}", "100.0"])
    print(tabulate(rows, headers=["stage", "calls", "seconds", "% of wall"]), file=sys.stderr)
    print(f"floor ratio: total / generate = {total / max(TIMES['generate (the floor)'], 1e-9):.2f}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
