"""What a user of the real backbones relies on before and after the evaluations (issue 11): the runtime
resolved from `auto`, the paper's task sets, the dry run, mirror errors, undefined ratios that never abort
a finished run, and a console with nothing from the libraries underneath."""
from __future__ import annotations

import dataclasses
import json

import pytest

from merge_bench.backbones import get_backbone, locate
from merge_bench.bench.plan import pick_tasks, resolve_runtime
from merge_bench.bench.report import normalization, results_table
from merge_bench.bench.run import RunConfig, dry_run, run_benchmark


def test_runtime_auto_on_a_cpu_machine():
    mistral, tiny = get_backbone("mistral"), get_backbone("tiny")
    rt = resolve_runtime("auto", "auto", None, mistral)
    assert (rt.backend, rt.device, rt.dtype) == ("hf", "cpu", "float32")
    assert "declares the vllm backend" in rt.notice and "no GPU" in rt.notice
    assert resolve_runtime("auto", "auto", None, tiny).notice is None  # tiny declares hf: nothing to say


def test_runtime_on_a_gpu_takes_the_backbone_dtype_and_names_what_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    rt = resolve_runtime("auto", "cuda", None, get_backbone("mistral"))
    assert (rt.backend, rt.device, rt.dtype) == ("hf", "cuda", "bfloat16")
    assert "vLLM is not installed" in rt.notice
    assert resolve_runtime("vllm", "cuda", "float16", get_backbone("llama")).dtype == "float16"
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        resolve_runtime("tgi", "cpu", None, get_backbone("tiny"))


def test_paper_task_sets_are_the_star_readme_sets():
    assert pick_tasks(get_backbone("mistral"), None, ["paper"], 42) == [
        "ethos", "causal", "ncbi", "owant", "gap", "snli", "disco", "math", "casino", "story", "pubmed", "sst2"]
    assert len(pick_tasks(get_backbone("flan"), None, ["paper"], 42)) == 10
    assert pick_tasks(get_backbone("llama"), None, ["paper"], 42)[:3] == ["sst2", "mrpc", "wic"]
    with pytest.raises(ValueError, match="no task set reported by the STAR paper"):
        pick_tasks(get_backbone("tiny"), None, ["paper"], 42)
    reported = get_backbone("mistral").reported_for(pick_tasks(get_backbone("mistral"), None, ["paper"], 42))
    assert [r.scores["star"] for r in reported] == [78.96]


def test_a_mirror_missing_a_file_names_the_id_and_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_MODELS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = tmp_path / "org" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"org/adapter: .*org/adapter/adapter_model.safetensors is missing"):
        locate("org/adapter", "lora")
    with pytest.raises(FileNotFoundError, match=r"org/absent is not a local directory .* expected it at .*org/absent"):
        locate("org/absent", "base")


def test_normalization_flags_undefined_and_unstable_tasks():
    norm = normalization({"a": 0.0, "b": 40.0, "c": 90.0}, {"a": 10.0, "b": 50.0, "c": 20.0})
    assert norm["undefined"] == ["a"] and norm["unstable"] == ["b"]
    assert "≤ 0 on a" in norm["note"] and "does not beat pretrained on b" in norm["note"]
    assert normalization({"a": 5.0}, {"a": 1.0}) == {"undefined": [], "unstable": [], "note": None}


def test_table_shows_na_a_footnote_and_the_papers_rows():
    record = {"config": {"tasks": ["x", "y"]}, "normalization": normalization({"x": 0.0, "y": 80.0}, {"x": 0.0, "y": 10.0}),
              "pretrained": {"scores": {"x": 0.0, "y": 10.0}, "normalized": None}, "lora": {"scores": {"x": 0.0, "y": 80.0}},
              "methods": {"star": {"scores": {"x": 0.0, "y": 40.0}, "normalized": None}}}
    from merge_bench.backbones.spec import Reported

    table = results_table(record, [Reported("STAR README", ("x", "y"), {"star": 77.5})])
    assert "x*" in table and "n/a" in table and "* the LoRA scores ≤ 0 on x" in table
    assert "star (reported)" in table and "77.50" in table and "not reproduced here" in table


def test_a_finished_run_with_an_undefined_ratio_prints_its_table_and_record(micro_backbone, cache, tmp_path, capsys):
    # The "color" task served by the "animal" adapter: its LoRA row scores 0, the ratio is undefined.
    swapped = dataclasses.replace(micro_backbone, adapters={**micro_backbone.adapters,
                                                            "color": micro_backbone.adapters["animal"]})
    cfg = RunConfig(backbone="micro", tasks=["color", "answer"], methods=["simple_avg"], out=tmp_path / "runs")
    record = run_benchmark(cfg, backbone=swapped, progress=False)
    out, err = capsys.readouterr()
    assert record["lora"]["scores"]["color"] == 0.0
    assert record["methods"]["simple_avg"]["normalized"] is None and record["pretrained"]["normalized"] is None
    assert record["normalization"]["undefined"] == ["color"]
    assert "n/a" in out and "simple_avg" in out and "warning: the LoRA scores ≤ 0 on color" in err
    saved = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert saved["normalization"]["undefined"] == ["color"]

    from merge_bench.bench.sweep import run_sweep
    from merge_bench.leaderboard.submit import submit_sweep

    with pytest.raises(ValueError, match="not a valid leaderboard entry: the LoRA scores ≤ 0 on color"):
        submit_sweep("simple_avg", "micro", root=tmp_path / "board", sizes=[len(swapped.pickable_tasks)],
                     out=tmp_path / "runs", runner=lambda c: run_sweep(c, backbone=swapped, progress=False))
    assert not (tmp_path / "board").exists()


def test_dry_run_plans_without_evaluating_then_counts_the_cache(micro_backbone, cache, tmp_path, capsys, monkeypatch):
    from merge_bench.evaluation.hf_backend import HFEvaluator

    cfg = RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=tmp_path / "runs",
                    cache_dir=tmp_path / "results")
    monkeypatch.setattr(HFEvaluator, "__init__", lambda *a, **k: pytest.fail("a dry run loaded the model"))
    plan = dry_run(cfg, backbone=micro_backbone)
    out = capsys.readouterr().out
    assert plan["evaluations"] == {"total": 3, "cached": 0, "to_run": 3, "items": 18}
    assert plan["runtime"] == {"backend": "hf", "device": "cpu", "dtype": "float32", "notice": None}
    assert "estimated time: unknown" in out and "adapter color (lora)" in out
    monkeypatch.undo()
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(cache))
    run_benchmark(cfg, backbone=micro_backbone, progress=False)
    again = dry_run(cfg, backbone=micro_backbone)
    assert again["evaluations"]["cached"] == 3 and again["evaluations"]["to_run"] == 0
    assert "items/s (this machine's last run)" in capsys.readouterr().out


def test_the_console_holds_only_merge_bench_lines(micro_backbone, cache, tmp_path, capfd):
    cfg = RunConfig(backbone="micro", tasks=["color", "animal"], methods=["simple_avg"], out=tmp_path / "runs")
    run_benchmark(cfg, backbone=micro_backbone, progress=True)
    out, err = capfd.readouterr()
    stray = [line for line in err.splitlines() if line.strip()
             and not line.startswith(("backbone micro", "run record: ")) and "evaluating" not in line]
    assert stray == []
    assert "fatal: not a git repository" not in out + err


def test_the_leaderboard_shows_the_papers_numbers_beside_a_matching_task_set():
    from merge_bench.leaderboard.views import reported_note

    paper = list(get_backbone("mistral").paper_tasks)
    note = reported_note("mistral-7b-instruct-v0.2", [paper])
    assert "Reported by the STAR paper for this task set, not reproduced here" in note and "star 78.96" in note
    assert reported_note("mistral-7b-instruct-v0.2", [paper[:3]]) == ""
    assert reported_note("mistral-7b-instruct-v0.2", [paper, paper]) == ""   # several draws: not the paper's set
    assert reported_note("no-such-backbone", [paper]) == ""
