"""Raw answers (lm-eval's --log_samples): every evaluation keeps each item's generated text, prompt hash and
score, in the result cache and in a gzipped samples file beside the run record; ``merge-bench samples`` prints
them. On the micro backbone (3 constant-answer tasks, trained micro adapters)."""
from __future__ import annotations

import json

import pytest

from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.bench.samples import read, samples_path
from merge_bench.cli import main

TASKS = ["color", "animal"]


@pytest.fixture
def run(micro_backbone, cache, tmp_path):
    cfg = RunConfig(backbone="micro", tasks=TASKS, methods=["simple_avg"], out=tmp_path / "runs")
    record = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    (path,) = (tmp_path / "runs").glob("*.json")
    return record, path, cfg


def test_samples_file_beside_the_record_holds_every_item(run, cache):
    record, path, _ = run
    lines = read(path)
    assert samples_path(path).is_file() and samples_path(path).read_bytes()[:2] == b"\x1f\x8b"   # gzip
    for row, items in [("pretrained", record["per_item"]["pretrained"]), ("lora", record["per_item"]["lora"]),
                       ("simple_avg", record["per_item"]["methods"]["simple_avg"])]:
        for task, scores in items.items():
            mine = sorted((x for x in lines if x["row"] == row and x["task"] == task), key=lambda x: x["index"])
            assert [x["score"] for x in mine] == scores                      # the same items, the same order
            assert len({x["id"] for x in mine}) == len(mine) == record["tasks"][task]["n"]
            assert all(isinstance(x["response"], str) and len(x["prompt_sha256"]) == 64 for x in mine)
    # the LoRA learned its constant answer: the text it wrote is what the scored items say
    lora = [x for x in lines if x["row"] == "lora" and x["task"] == "color"]
    assert sum(x["score"] for x in lora) > 0.5 * len(lora)
    assert len({x["prompt_sha256"] for x in lines if x["task"] == "color"}) == record["tasks"]["color"]["n"]
    assert list(cache.rglob("*.samples.jsonl.gz"))                             # also in the result cache


def test_a_rerun_from_the_cache_writes_the_same_samples(run, micro_backbone, tmp_path):
    _, path, cfg = run
    from dataclasses import replace

    run_benchmark(replace(cfg, out=tmp_path / "again"), backbone=micro_backbone, progress=False)
    (again,) = (tmp_path / "again").glob("*.json")
    assert read(again) == read(path)


def test_samples_command_prints_one_method_on_one_task(run, capsys):
    record, path, _ = run
    assert main(["samples", str(path), "--method", "simple_avg", "--task", "animal"]) == 0
    out = capsys.readouterr().out
    n = record["tasks"]["animal"]["n"]
    assert out.count("\n#") + out.startswith("#") == n
    assert f"{n} items, mean score {record['methods']['simple_avg']['scores']['animal']:.2f}" in out
    assert main(["samples", str(samples_path(path)), "--method", "lora", "--task", "color", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["score"] for r in rows] == record["per_item"]["lora"]["color"]
    assert main(["samples", str(path), "--method", "ties", "--task", "color"]) == 2
    assert "no samples for --method ties" in capsys.readouterr().err
