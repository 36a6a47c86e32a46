"""The executors (issue 14) on a real local Ray cluster, started once for the module (Ray has no local mode):
the ray executor gives the sequential executor's record, a batch that raises or loses its worker runs again,
and a killed driver's rerun evaluates only what no worker finished."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from merge_bench.backbones import get_backbone
from merge_bench.bench.executor import LORA_BATCH, batches
from merge_bench.bench.plan import ExecutorConfig
from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.bench.worker import MergeInput, Work

METHODS = ["simple_avg", "ties"]  # factor space and dense; simple_avg keeps the answer two micro tasks share

FAULTY = '''
import os
import time
from pathlib import Path

from merge_bench.merging.methods.simple_avg import SimpleAvg

MARK = Path(__file__).with_suffix(".{mode}")


class Faulty(SimpleAvg):
    """simple_avg whose first merge (marked by a file, so across processes) {mode}s."""

    name = "faulty_{mode}"

    def merge(self, deltas, key):
        if not MARK.exists():
            MARK.write_text("once")
            if "{mode}" == "raise":
                raise RuntimeError("an injected failure")
            if "{mode}" == "die":
                os._exit(1)
            time.sleep(600)  # stall: the driver is killed meanwhile
        return super().merge(deltas, key)
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU cluster for the module, and the micro backbone built under a module cache."""
    root = tmp_path_factory.mktemp("executor")
    old = os.environ.get("MERGE_BENCH_CACHE")
    os.environ["MERGE_BENCH_CACHE"] = str(root / "cache")  # before ray.init: the workers inherit it
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    backbone = get_backbone("micro")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield root, backbone
    ray.shutdown()
    if old is None:
        os.environ.pop("MERGE_BENCH_CACHE")
    else:
        os.environ["MERGE_BENCH_CACHE"] = old


def plugin(root: Path, mode: str) -> str:
    path = root / f"faulty_{mode}.py"
    path.write_text(FAULTY.format(mode=mode))
    return f"{path}:Faulty"


def config(root: Path, name: str, executor: str, methods=METHODS, **kwargs) -> RunConfig:
    ex = ExecutorConfig("ray", workers=2) if executor == "ray" else ExecutorConfig()
    return RunConfig(backbone="micro", methods=methods, cache_dir=root / name, out=root / "runs", executor=ex,
                     **kwargs)


def scores(record: dict) -> dict:
    return {"pretrained": record["pretrained"]["scores"], "lora": record["lora"]["scores"],
            "methods": {k: (m["scores"], m["merged_sha256"]) for k, m in record["methods"].items()},
            "per_item": record["per_item"]}


def test_ray_gives_the_sequential_record(cluster):
    root, bb = cluster
    seq = run_benchmark(config(root, "seq", "sequential"), backbone=bb, progress=False)
    par = run_benchmark(config(root, "ray", "ray"), backbone=bb, progress=False)
    assert scores(par) == scores(seq) and seq["methods"]["simple_avg"]["normalized"] > 0
    assert seq["executor"] == {"name": "sequential", "workers": 1}
    assert par["executor"] == {"name": "ray", "workers": 2, "address": "local", "threads_per_worker": 1,
                               "max_retries": 2}
    assert len(list((root / "ray").rglob("*.json"))) == 3 + 3 + 3 * len(METHODS)  # each result cached once


def test_the_tuned_track_searches_through_ray_as_it_does_sequentially(cluster):
    root, bb = cluster
    seq = run_benchmark(config(root, "tuned-seq", "sequential", ["task_arithmetic", "ties"], track="tuned"),
                        backbone=bb, progress=False)
    par = run_benchmark(config(root, "tuned-ray", "ray", ["task_arithmetic", "ties"], track="tuned"),
                        backbone=bb, progress=False)
    strip = {k: {f: v for f, v in s.items() if f != "seconds"} for k, s in seq["tuning"].items()}
    assert {k: {f: v for f, v in s.items() if f != "seconds"} for k, s in par["tuning"].items()} == strip
    assert scores(par) == scores(seq)


@pytest.mark.parametrize("mode", ["raise", "die"])
def test_a_failed_or_lost_batch_runs_again(cluster, mode):
    root, bb = cluster
    faulty = plugin(root, mode)
    record = run_benchmark(config(root, f"faulty-{mode}", "ray", ["simple_avg", faulty]), backbone=bb,
                           progress=False)
    assert (root / f"faulty_{mode}.{mode}").read_text() == "once"  # it did fail once
    faulty_row, avg = record["methods"][f"faulty_{mode}"], record["methods"]["simple_avg"]
    assert (faulty_row["merged_sha256"], faulty_row["scores"]) == (avg["merged_sha256"], avg["scores"])


def test_a_batch_failing_past_its_retries_fails_the_run(cluster, tmp_path):
    root, bb = cluster
    always = tmp_path / "always.py"
    always.write_text("from merge_bench.merging.methods.simple_avg import SimpleAvg\n\n\n"
                      "class Always(SimpleAvg):\n    name = 'always'\n\n"
                      "    def merge(self, deltas, key):\n        raise RuntimeError('never merges')\n")
    with pytest.raises(RuntimeError, match="never merges"):
        run_benchmark(config(root, "always", "ray", [f"{always}:Always"]), backbone=bb, progress=False)
    assert len(list((root / "always").rglob("*.json"))) == 3 + 3  # what could finish did, and is cached


def test_a_killed_driver_reruns_only_the_missing_jobs(cluster):
    root, bb = cluster
    stall = plugin(root, "stall")
    cache = root / "cache" / "results"  # the driver's default cache under $MERGE_BENCH_CACHE
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "merge_bench.cli", "run", "--backbone", "micro", "--methods", f"simple_avg,ties,{stall}",
         "--executor", "ray", "--address", address, "--workers", "2", "--out", str(root / "runs")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    others = 3 + 3 + 3 * 2  # pretrained, LoRAs, simple_avg and ties: all but the stalled merge's 3 results
    deadline = time.monotonic() + 240
    while not ((root / "faulty_stall.stall").exists() and len(list(cache.rglob("*.json"))) >= others):
        assert driver.poll() is None, driver.stderr.read().decode()
        assert time.monotonic() < deadline, "the driver did not get going"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    assert len(done) == others

    cfg = config(root, "cache/results", "ray", ["simple_avg", "ties", stall])
    record = run_benchmark(cfg, backbone=bb, progress=False)
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    assert {p: after[p] for p in done} == done      # nothing finished was evaluated again
    assert len(after) == others + 3                 # only the stalled merge's three tasks ran
    stalled, avg = record["methods"]["faulty_stall"], record["methods"]["simple_avg"]
    assert (stalled["merged_sha256"], stalled["scores"]) == (avg["merged_sha256"], avg["scores"])


def test_without_ray_the_executor_names_the_install(cluster, monkeypatch):
    root, bb = cluster
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(ValueError, match=r"pip install 'merge-bench\[ray\]'"):
        run_benchmark(config(root, "noray", "ray"), backbone=bb, progress=False)


def test_executor_options_are_checked():
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        ExecutorConfig("dask")
    with pytest.raises(ValueError, match="--address and --workers go with --executor ray"):
        ExecutorConfig(workers=2)
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        ExecutorConfig("ray", workers=0)


def test_batches_put_low_rank_works_together_on_vllm_and_dense_ones_last():
    def work(name, lowrank=None):
        merge = None if lowrank is None else MergeInput(name, {}, (), Path("."), None, None, lowrank)
        return Work(name, ("t",), ({},), merge=merge)

    works = [work("pretrained"), work("dense", False), *(work(f"lr{i}", True) for i in range(LORA_BATCH + 1))]
    assert batches(works, "hf") == [[i] for i in (0, *range(2, len(works)))] + [[1]]
    assert batches(works, "vllm") == [[0, *range(2, LORA_BATCH + 1)], [LORA_BATCH + 1, LORA_BATCH + 2], [1]]
