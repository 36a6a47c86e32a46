"""The run pipeline end to end on a micro backbone built in the test (micro Llama, 3 tasks, trained
micro adapters): the table, normalized scores against a hand computation, caching and resume."""
from __future__ import annotations

import json

import pytest

from merge_bench.bench import plan as plan_mod
from merge_bench.bench import worker
from merge_bench.backbones import get_backbone
from merge_bench.merging.methods import get_method
from merge_bench.bench.provenance import merge_code_sha256
from merge_bench.bench.run import RunConfig, pick_tasks, results_table, run_benchmark


def count_evaluations(monkeypatch) -> list:
    from merge_bench.evaluation.hf_backend import HFEvaluator

    calls = []
    original = HFEvaluator.evaluate

    def counting(self, shorts):
        calls.append(tuple(shorts))
        return original(self, shorts)

    monkeypatch.setattr(HFEvaluator, "evaluate", counting)
    return calls


def test_run_end_to_end_and_resume(micro_backbone, cache, tmp_path, monkeypatch, capsys):
    calls = count_evaluations(monkeypatch)
    cfg = RunConfig(backbone="micro", methods=["simple_avg", "task_arithmetic"], out=tmp_path / "runs")

    # A run killed while evaluating the second method: everything before it is cached.
    real_merge = worker.merge_variant

    def dying_merge(merge, *args, **kwargs):
        if merge.spec == "task_arithmetic":
            raise KeyboardInterrupt
        return real_merge(merge, *args, **kwargs)

    monkeypatch.setattr(worker, "merge_variant", dying_merge)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg, backbone=micro_backbone, progress=False)
    first_calls = list(calls)
    assert len(first_calls) == 3 + 3 + 3  # pretrained on 3 tasks, 3 LoRAs on their own task, simple_avg on 3

    monkeypatch.setattr(worker, "merge_variant", real_merge)
    calls.clear()
    record = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert calls == [("color",), ("animal",), ("answer",)]  # only the method that had not run

    tasks = ["color", "animal", "answer"]
    assert record["config"]["tasks"] == tasks
    lora = record["lora"]["scores"]
    assert all(lora[t] > 50 for t in tasks), lora  # the micro adapters learned their answers
    assert all(record["pretrained"]["scores"][t] == 0 for t in tasks)
    for key, m in record["methods"].items():
        hand = sum(100 * m["scores"][t] / lora[t] for t in tasks) / 3
        assert m["normalized"] == pytest.approx(hand)
        assert m["merged_sha256"]

    # The printed table has the rows and columns a user reads.
    table = results_table(record)
    lines = table.splitlines()
    assert lines[0].split() == ["model", *tasks, "Avg.", "Normalized", "95", "%", "CI", "Retained", "gain", "[95",
                                "%", "CI]"]
    # The retained gain: pretrained scores 0 on every task here, so it equals the normalized score.
    for m in record["methods"].values():
        assert m["retained"] == pytest.approx(m["normalized"], abs=1e-3)
    assert [l.split()[0] for l in lines[2:]] == ["pretrained", "LoRA", "simple_avg", "task_arithmetic"]
    assert table in capsys.readouterr().out

    # Protocol v2: every evaluation keeps its per-item scores, in the order of the sampled ids, and every
    # normalized score carries its bootstrap CI.
    items = record["per_item"]
    assert {t: len(v) for t, v in items["pretrained"].items()} == {t: record["tasks"][t]["n"] for t in tasks}
    assert set(items["lora"]) == set(tasks) and set(items["methods"]) == set(record["methods"])
    for key, m in record["methods"].items():
        assert [100 * sum(items["methods"][key][t]) / len(items["methods"][key][t]) for t in tasks] == \
            pytest.approx([m["scores"][t] for t in tasks])
        lo, hi = m["normalized_ci95"]
        assert lo <= m["normalized"] <= hi
    assert record["stats"]["B"] == 2000 and record["stats"]["reference"] == "simple_avg"

    # The record on disk reloads and equals what was returned.
    saved = sorted((tmp_path / "runs").glob("micro-*.json"))
    assert json.loads(saved[-1].read_text()) == json.loads(json.dumps(record))

    # A full rerun evaluates nothing and gives the same scores.
    calls.clear()
    again = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert calls == []
    assert again["methods"] == record["methods"] and again["lora"] == record["lora"]


def test_a_change_to_the_merge_code_evaluates_merged_rows_again(micro_backbone, cache, tmp_path, monkeypatch):
    calls = count_evaluations(monkeypatch)
    cfg = RunConfig(backbone="micro", methods=["simple_avg"], out=tmp_path / "runs", tasks=["color"])
    first = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert first["methods"]["simple_avg"]["merge_code_sha256"] == merge_code_sha256(get_method("simple_avg"))
    calls.clear()
    # Another merge implementation (here: a stand-in hash) must not read back the old merged score;
    # the pretrained and LoRA rows do not depend on it and stay cached.
    monkeypatch.setattr(plan_mod, "merge_code_sha256", lambda cls: "0" * 64)
    run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert calls == [("color",)]


def test_merge_code_hash_covers_the_methods_and_a_plugin_file(tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text("from merge_bench.merging.methods.simple_avg import SimpleAvg\n\n"
                      "class Mine(SimpleAvg):\n    name = 'mine'\n")
    first = merge_code_sha256(get_method(f"{plugin}:Mine"))
    assert first != merge_code_sha256(get_method("simple_avg"))
    plugin.write_text(plugin.read_text() + "# edited\n")
    assert merge_code_sha256(get_method(f"{plugin}:Mine")) != first


def test_param_override_is_its_own_row(micro_backbone, cache, tmp_path):
    cfg = RunConfig(backbone="micro", methods=["task_arithmetic"], params={"task_arithmetic": {"lam": "1.0"}},
                    out=tmp_path / "runs", tasks=["color"])
    record = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert list(record["methods"]) == ["task_arithmetic[lam=1.0]"]
    assert record["methods"]["task_arithmetic[lam=1.0]"]["params"] == {"lam": 1.0}


def test_task_pick_is_deterministic():
    bb = get_backbone("mistral")
    first = pick_tasks(bb, 12, None, 42)
    assert first == pick_tasks(bb, 12, None, 42)
    assert len(set(first)) == 12 and set(first) <= set(bb.pickable_tasks)
    assert "qasc" not in bb.pickable_tasks and "answerable" not in bb.pickable_tasks
    assert pick_tasks(bb, 12, None, 7) != first  # another seed, another set
    assert first == [t for t in bb.tasks if t in first]  # listed in the backbone's order


@pytest.mark.parametrize("cfg, message", [
    (dict(tasks=["nope"]), "valid tasks: ethos"),
    (dict(n_tasks=99), "--n-tasks must be between 1 and 18"),
])
def test_bad_task_choices(cfg, message):
    with pytest.raises(ValueError, match=message):
        pick_tasks(get_backbone("mistral"), cfg.get("n_tasks"), cfg.get("tasks"), 42)


def test_unknown_names_list_valid_ones(capsys):
    from merge_bench.cli import main

    assert main(["run", "--backbone", "gpt5"]) == 2
    assert "valid backbones: flan-t5-large, llama-3.2-3b-instruct" in capsys.readouterr().err
    assert main(["run", "--backbone", "mistral", "--methods", "magic"]) == 2
    assert "unknown method 'magic'; valid methods:" in capsys.readouterr().err
    assert main(["run", "--backbone", "mistral", "--tasks", "ethos,nope"]) == 2
    assert "unknown task(s) ['nope'] for backbone mistral-7b-instruct-v0.2; valid tasks:" in capsys.readouterr().err
    assert main(["run", "--param", "star"]) == 2
    assert "expected method.key=value" in capsys.readouterr().err


def test_a_cached_result_without_per_item_scores_is_evaluated_again(micro_backbone, cache, tmp_path, monkeypatch):
    calls = count_evaluations(monkeypatch)
    cfg = RunConfig(backbone="micro", methods=["simple_avg"], out=tmp_path / "runs", tasks=["color"],
                    cache_dir=tmp_path / "results")
    first = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert len(calls) == 3
    old = next(p for p in (tmp_path / "results").rglob("*.json")
               if json.loads(p.read_text())["key"]["variant"]["kind"] == "pretrained")
    entry = json.loads(old.read_text())
    del entry["value"]["per_item"]  # as an earlier release cached it
    old.write_text(json.dumps(entry))
    calls.clear()
    again = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    assert calls == [("color",)]  # only the pretrained row, which had no per-item scores
    assert again["per_item"] == first["per_item"]
