"""A dry run that tells the truth: the tuned search counted, every missing input listed at once, the base's
memory and disk footprint, nothing big written, and --draws that cannot all be distinct said out loud."""
from __future__ import annotations

import pytest

from merge_bench.bench.estimate import footprint
from merge_bench.bench.run import RunConfig, dry_run
from merge_bench.bench.sweep import dry_run_sweep, plan_draws
from merge_bench.cli import main


def test_the_tuned_track_is_counted_and_timed(micro_backbone, cache, tmp_path, capsys):
    cfg = RunConfig(backbone="micro", sizes=[2], draws=2, methods=["simple_avg", "task_arithmetic"],
                    track="tuned", out=tmp_path / "runs")
    plan = dry_run_sweep(cfg, backbone=micro_backbone)
    out = capsys.readouterr().out
    sets = [d["tasks"] for d in plan["draws"]]
    union = {t for s in sets for t in s}
    # each task's LoRA on its validation variant once; per draw, simple_avg (no grid) 1 merge-evaluation and
    # task_arithmetic (8 values of lam) 8, each on the draw's 2 validation tasks; 4 items per validation task
    evaluations = len(union) + len(sets) * (1 + 8) * 2
    assert plan["tuning"] == {"evaluations": evaluations, "items": 4 * evaluations, "budget": 8}
    assert f"at most {evaluations} validation evaluations first ({4 * evaluations} items)" in out
    default = dry_run_sweep(RunConfig(backbone="micro", sizes=[2], draws=2, methods=["simple_avg", "task_arithmetic"],
                                      out=tmp_path / "runs"), backbone=micro_backbone)
    assert "tuning" not in default and default["evaluations"] == plan["evaluations"]


def test_a_dry_run_converts_nothing_and_says_what_the_first_run_writes(cache, tmp_path, capsys):
    plan = dry_run(RunConfig(backbone="tiny", tasks=["nli"], methods=["simple_avg"], out=tmp_path / "runs"))
    out = capsys.readouterr().out
    assert not cache.exists()  # no 0.5 GB base conversion in a "dry" run
    params = 134_515_008  # SmolLM2-135M (tests/test_tiny_base.py counts the converted model's)
    assert plan["footprint"]["params"] == params and plan["footprint"]["memory_bytes"] == params * 4
    assert plan["footprint"]["disk_bytes"] > params * 4
    assert f"the base is converted on the first run into {cache / 'tiny' / 'base-v2'} (about 541.7 MB)" in out
    assert "memory: at least 538.1 MB" in out and plan["evaluations"]["to_run"] == 3


def test_the_memory_of_a_big_base_that_is_not_here_yet():
    size = footprint("mistralai/Mistral-7B-Instruct-v0.2", None, None, "float32")
    assert size["memory_bytes"] == 7_241_732_096 * 4
    assert "memory: at least 29.0 GB" in size["lines"][0]
    assert "writes about 14.5 GB (bfloat16)" in size["lines"][1]


def test_every_missing_input_is_listed_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MERGE_BENCH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    assert main(["run", "--backbone", "llama", "--tasks", "cola,sst2", "--methods", "simple_avg", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    missing = [line for line in out.splitlines() if line.startswith("missing: ")]
    assert len(missing) == 5, out  # the base, two adapters, two tasks' data
    for name in ("meta-llama/Llama-3.2-3B-Instruct", "Speeeed/Llama-3.2-3B-instruct-cola-lora",
                 "Speeeed/Llama-3.2-3B-instruct-sst2-lora", "task cola:", "task sst2:"):
        assert any(name in line for line in missing), name
    assert str(tmp_path / "models" / "meta-llama/Llama-3.2-3B-Instruct") in out
    assert "5 input(s) a run needs are missing" in err and err.count("\n") == 1


def test_draws_beyond_the_distinct_sets_are_said(micro_backbone, capsys):
    specs = plan_draws(micro_backbone, [2, 3], 4, 42)
    err = capsys.readouterr().err
    assert sum(s.n == 3 for s in specs) == 1
    assert "warning: --n-tasks 3 is the whole pool of micro (3 tasks): one task set, not --draws 4" in err
    assert "warning: --draws 4 at N=2: the pool of 3 tasks has only 3 distinct sets" in err
    plan_draws(micro_backbone, [2], 3, 42)
    assert capsys.readouterr().err == ""
