"""A result's identity is its content, not where the checkout lives: the same run from two checkouts at
different paths, sharing one $MERGE_BENCH_CACHE, evaluates only once (and records the same task hashes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import merge_bench
from merge_bench.io.files import cache_root

REPO = Path(merge_bench.__file__).resolve().parents[1]


def checkout(where: Path) -> Path:
    """What a clone holds that a run reads: the package, the task folder and the tiny adapters."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("merge_bench", "tasks"):
        shutil.copytree(REPO / name, where / name, ignore=skip)
    shutil.copytree(REPO / "adapters" / "tiny", where / "adapters" / "tiny", ignore=skip)
    return where


def merge_bench_cli(clone: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(clone), "MERGE_BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MERGE_BENCH_TASKS_DIR", None)
    done = subprocess.run([sys.executable, "-m", "merge_bench.cli", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_the_same_tiny_run_from_two_checkouts_evaluates_once(tmp_path):
    cache = tmp_path / "cache"
    converted = cache_root() / "tiny"  # the tiny base converted before, by content the same: saves 0.5 GB and 30 s
    if converted.is_dir():
        cache.mkdir()
        (cache / "tiny").symlink_to(converted)
    first, second = checkout(tmp_path / "a"), checkout(tmp_path / "elsewhere" / "deeper" / "b")
    run = ["run", "--backbone", "tiny", "--tasks", "nli", "--methods", "simple_avg", "--limit", "3"]

    probe = subprocess.run([sys.executable, "-c", "import merge_bench; print(merge_bench.__file__)"], cwd=second,
                           env={**os.environ, "PYTHONPATH": str(second)}, capture_output=True, text=True)
    assert Path(probe.stdout.strip()).is_relative_to(second)  # each clone runs its own copy of the code

    merge_bench_cli(first, cache, *run, "--out", str(first / "runs"))
    results = sorted(p.name for p in (cache / "results").rglob("*.json"))
    assert len(results) == 3  # pretrained, the LoRA and simple_avg on one task

    plan = merge_bench_cli(second, cache, *run, "--dry-run").stdout
    assert "evaluations: 3 (3 cached, 0 to run" in plan
    merge_bench_cli(second, cache, *run, "--out", str(second / "runs"))
    assert sorted(p.name for p in (cache / "results").rglob("*.json")) == results  # nothing evaluated again

    records = [json.loads(next((c / "runs").glob("*.json")).read_text()) for c in (first, second)]
    assert records[0]["tasks"] == records[1]["tasks"]  # the same task hashes from both places
    assert records[0]["methods"]["simple_avg"]["scores"] == records[1]["methods"]["simple_avg"]["scores"]
