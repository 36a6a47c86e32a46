"""Rehearse a real backbone end to end on a random-weight mirror of itself (issue 11): build the mirror,
run `merge-bench run --backbone B --methods all --limit 2` on it with the hub-schema fixtures as data, and
fail unless the run exits 0, prints the table with every method, and writes its record.

    python scripts/rehearse.py --backbone mistral [--backend hf|vllm] [--n-tasks K] [--mirror DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True, help="flan, llama or mistral")
    ap.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    ap.add_argument("--mirror", type=Path, help="mirror folder (default: a temporary one)")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--n-tasks", type=int, help="draw this many tasks (default: all; CI's vLLM step takes 3)")
    args = ap.parse_args()

    from merge_bench.backbones.rehearsal import build_mirror
    from merge_bench.merging.methods import available_methods

    with tempfile.TemporaryDirectory(prefix="merge-bench-rehearsal-") as tmp:
        mirror = args.mirror or Path(tmp) / "mirror"
        start = time.perf_counter()
        build_mirror(args.backbone, mirror)
        built = time.perf_counter() - start
        out = Path(tmp) / "runs"
        env = {**os.environ, "MERGE_BENCH_MODELS": str(mirror), "MERGE_BENCH_DATA_DIR": str(REPO / "tests" / "fixtures"),
               "MERGE_BENCH_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "merge_bench.cli", "run", "--backbone", args.backbone, "--methods", "all",
               "--limit", str(args.limit), "--backend", args.backend, "--device", "cpu", "--out", str(out)]
        if args.n_tasks:
            cmd += ["--n-tasks", str(args.n_tasks)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        ran = time.perf_counter() - start
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            print(f"rehearsal {args.backbone}: exit {proc.returncode}", file=sys.stderr)
            return 1
        records = sorted(out.glob("*.json"))
        if len(records) != 1:
            print(f"rehearsal {args.backbone}: expected one run record under {out}, found {len(records)}", file=sys.stderr)
            return 1
        record = json.loads(records[0].read_text())
        missing = sorted(set(available_methods()) - set(record["methods"]))
        absent = [m for m in available_methods() if m not in proc.stdout]
        if missing or absent:
            print(f"rehearsal {args.backbone}: methods missing from the record {missing} or the table {absent}",
                  file=sys.stderr)
            return 1
        stray = [line for line in proc.stderr.splitlines() if line.strip() and not _ours(line)]
        print(f"rehearsal {args.backbone} ({args.backend}): OK; mirror {built:.0f} s, run {ran:.0f} s, "
              f"{len(record['tasks'])} tasks × {len(record['methods'])} methods; stray stderr lines: {len(stray)}")
        for line in stray[:20]:
            print(f"  stray: {line}")
    return 0


def _ours(line: str) -> bool:
    """merge-bench's own stderr: its header, notes, warnings, progress bar and the record path."""
    return line.startswith(("backbone ", "note: ", "warning: ", "run record: ", "evaluating")) or "evaluating:" in line


if __name__ == "__main__":
    sys.exit(main())
