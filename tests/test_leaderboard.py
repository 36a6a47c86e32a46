"""Leaderboard entries: conversion from run records, schema round trip, validation, submit.

Run records are fabricated here (``make_record``) with the same shape as ``merge_bench.bench.run``'s,
and consistent numbers (normalized scores computed from the per-task ones), so these tests do not
need the evaluation pipeline.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from merge_bench.cli import main
from merge_bench.leaderboard import (
    Entry, content_sha256, default_root, entries_from_record, json_schema, read_entry, submit, task_set_id,
    validate_leaderboard, write_entry,
)
from merge_bench.leaderboard.submit import parse_params
from merge_bench.bench.run import RunConfig, resolve_methods

LORA = {"sentiment": 99.0, "topic": 97.0, "nli": 88.5, "add": 70.0}
PRETRAINED = {"sentiment": 12.0, "topic": 30.5, "nli": 33.0, "add": 1.5}
# Per method key: the scores a "run" gives (0–100).
TRUTH = {
    "simple_avg": {"sentiment": 60.0, "topic": 55.5, "nli": 40.0, "add": 20.0},
    "task_arithmetic": {"sentiment": 70.0, "topic": 50.0, "nli": 45.5, "add": 10.0},
    "task_arithmetic[lam=0.3]": {"sentiment": 75.0, "topic": 62.0, "nli": 41.0, "add": 14.0},
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def norm(scores: dict[str, float], tasks: list[str]) -> float:
    return sum(100 * scores[t] / LORA[t] for t in tasks) / len(tasks)


def make_record(tasks: list[str], methods: dict[str, tuple[str, dict[str, Any]]], *, truth=TRUTH,
                pretrained=PRETRAINED, lora=LORA, backbone: str = "tiny", seed: int = 42, limit: int | None = None,
                created: str = "2026-11-22T12:00:00Z", torch_version: str = "2.13.0") -> dict:
    """A run record as ``merge_bench.bench.run.run_benchmark`` writes it, with consistent numbers."""
    pre = {t: pretrained[t] for t in tasks}
    lo = {t: lora[t] for t in tasks}
    return {
        "record_version": 1, "created": created,
        "merge_bench": {"version": "0.1.0", "git_commit": "abc123"},
        "versions": {"python": "3.11.7", "torch": torch_version, "transformers": "5.23.0", "peft": "0.21.2",
                     "lm_eval": "0.4.13", "vllm": None},
        "hardware": {"platform": "Linux-6.1-x86_64", "cpu": "x86_64", "cpu_count": 2, "gpu": None},
        "config": {"backbone": backbone, "tasks": list(tasks), "methods": [m[0] for m in methods.values()],
                   "params": {}, "seed": seed, "backend": "hf", "device": "cpu", "limit": limit, "batch_size": None},
        "backbone": {"name": backbone, "base_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "base_revision": "rev1",
                     "base_sha256": sha(f"{backbone}-base")},
        "adapters": {t: {"id": f"adapters/{backbone}/{t}", "revision": None, "sha256": sha(f"adapter-{t}")}
                     for t in tasks},
        "tasks": {t: {"short": t, "lm_eval_task": f"{backbone}_{t}", "version": "1.0", "n": 200,
                      "sample_ids_sha256": sha(f"ids-{t}"), "yaml_sha256": sha(f"yaml-{t}"), "metric": "acc"}
                  for t in tasks},
        "pretrained": {"scores": pre, "normalized": norm(pre, list(tasks))},
        "lora": {"scores": lo},
        "methods": {
            key: {"method": name, "params": params, "scores": {t: truth[key][t] for t in tasks},
                  "normalized": norm(truth[key], list(tasks)), "merged_sha256": sha(f"merged-{key}")}
            for key, (name, params) in methods.items()
        },
        "record_sha256": sha("record"),
    }


def fake_runner(truth=TRUTH, pretrained=PRETRAINED, calls: list | None = None, **record_kwargs):
    """A stand-in for run_benchmark: resolves methods and keys like the real pipeline, fabricates scores."""
    def runner(cfg: RunConfig) -> dict:
        if calls is not None:
            calls.append(cfg)
        tasks = cfg.tasks or sorted(LORA)[: cfg.n_tasks or len(LORA)]
        runs = resolve_methods(cfg.methods, cfg.params)
        methods = {r.key: (r.name, r.config) for r in runs}
        return make_record(list(tasks), methods, truth=truth, pretrained=pretrained, backbone=cfg.backbone,
                           seed=cfg.seed, **record_kwargs)
    return runner


TASKS3 = ["nli", "sentiment", "topic"]
METHODS = {"simple_avg": ("simple_avg", {}), "task_arithmetic": ("task_arithmetic", {"lam": 0.4}),
           "task_arithmetic[lam=0.3]": ("task_arithmetic", {"lam": 0.3})}


@pytest.fixture
def board(tmp_path) -> Path:
    """A leaderboard with the three METHODS on TASKS3 for backbone tiny."""
    root = tmp_path / "leaderboard"
    for entry in entries_from_record(make_record(TASKS3, METHODS)):
        write_entry(root, entry)
    return root


def test_task_set_id_is_stable_and_order_free():
    assert task_set_id(["topic", "nli", "sentiment"]) == task_set_id(TASKS3)
    assert task_set_id(TASKS3) == "n3-" + sha("nli,sentiment,topic")[:8]
    assert task_set_id(["nli", "sentiment"]) != task_set_id(["nli", "topic"])
    with pytest.raises(ValueError, match="at least one task"):
        task_set_id([])


def test_entries_from_record_carry_scores_references_and_provenance():
    entries = entries_from_record(make_record(TASKS3, METHODS))
    assert [e.method.key for e in entries] == list(METHODS)
    e = entries[0]
    assert e.backbone == "tiny" and e.task_set.tasks == TASKS3 and e.task_set.id == task_set_id(TASKS3)
    # mean of 100·score/LoRA over nli, sentiment, topic, by hand:
    expected = (100 * 40 / 88.5 + 100 * 60 / 99 + 100 * 55.5 / 97) / 3
    assert e.normalized == pytest.approx(expected, abs=1e-9)
    assert e.pretrained.normalized == pytest.approx((100 * 33 / 88.5 + 100 * 12 / 99 + 100 * 30.5 / 97) / 3)
    assert e.lora.normalized == pytest.approx(100.0)
    assert e.method.source == "builtin" and e.method.params == {}
    assert entries[2].method.params == {"lam": 0.3}
    p = e.provenance
    assert p.merge_bench.git_commit == "abc123" and p.versions.torch == "2.13.0" and p.versions.vllm is None
    assert p.backbone.base_sha256 == sha("tiny-base") and p.adapters["nli"].sha256 == sha("adapter-nli")
    assert p.tasks["topic"].sample_ids_sha256 == sha("ids-topic") and p.tasks["topic"].lm_eval_task == "tiny_topic"
    assert (p.backend, p.device, p.seed, p.date.year) == ("hf", "cpu", 42, 2026)
    assert p.merged_sha256 == sha("merged-simple_avg")
    assert e.entry_sha256 == content_sha256(e.content())


def test_entry_json_round_trip(tmp_path):
    entry = entries_from_record(make_record(TASKS3, METHODS))[2]
    assert Entry.model_validate_json(entry.to_json()) == entry
    path = write_entry(tmp_path, entry)
    assert path == tmp_path / "v1" / "tiny" / task_set_id(TASKS3) / "task_arithmetic[lam=0.3].json"
    assert read_entry(path) == entry
    assert content_sha256(json.loads(path.read_text())) == entry.entry_sha256
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_repository_schema_file_is_current():
    path = default_root() / "entry.schema.json"
    assert path.is_file(), f"{path} is missing: run merge-bench leaderboard build"
    assert json.loads(path.read_text()) == json_schema(), f"{path} is stale: run merge-bench leaderboard build"


def test_exported_json_schema_accepts_entries_and_rejects_missing_fields():
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(entries_from_record(make_record(TASKS3, METHODS))[0].to_json())
    jsonschema.validate(data, json_schema())
    del data["provenance"]["backbone"]["base_sha256"]
    with pytest.raises(jsonschema.ValidationError, match="base_sha256"):
        jsonschema.validate(data, json_schema())


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"].update(limit=20), "limit=20"),
    (lambda r: r["methods"]["simple_avg"].update(normalized=50.0), r"methods\['simple_avg'\].normalized is 50.0"),
    (lambda r: r["backbone"].pop("base_sha256"), "missing key 'base_sha256'"),
    (lambda r: r["methods"]["simple_avg"].update(method="no_such_method"), "no_such_method"),
    (lambda r: r["methods"]["simple_avg"]["scores"].pop("nli"), r"has tasks \['sentiment', 'topic'\]"),
])
def test_entries_from_record_refuses_bad_records(change, message):
    record = make_record(TASKS3, METHODS)
    change(record)
    with pytest.raises(ValueError, match=message):
        entries_from_record(record)


# --- validation ---------------------------------------------------------------------------------

def _problems(root: Path) -> list[str]:
    return [str(p) for p in validate_leaderboard(root)[1]]


def _edit(path: Path, change, reseal: bool = True) -> None:
    data = json.loads(path.read_text())
    change(data)
    if reseal:
        data["entry_sha256"] = content_sha256(data)
    path.write_text(json.dumps(data))


def _file(root: Path, key: str) -> Path:
    return root / "v1" / "tiny" / task_set_id(TASKS3) / f"{key}.json"


def test_valid_leaderboard_has_no_problems(board):
    entries, problems = validate_leaderboard(board)
    assert problems == [] and len(entries) == 3


def test_validate_reports_a_missing_field(board):
    path = _file(board, "simple_avg")
    _edit(path, lambda d: d["provenance"]["backbone"].pop("base_sha256"))
    assert _problems(board) == [f"{path}: provenance.backbone.base_sha256: missing field"]


def test_validate_recomputes_the_normalized_score(board):
    path = _file(board, "task_arithmetic")
    _edit(path, lambda d: d.update(normalized=d["normalized"] + 0.01))
    (problem,) = _problems(board)
    assert problem.startswith(f"{path}: normalized: states ") and "per-task scores give" in problem


def test_validate_flags_an_unknown_method(board):
    path = _file(board, "simple_avg")
    target = _file(board, "no_such_method")
    _edit(path, lambda d: d["method"].update(name="no_such_method", key="no_such_method"))
    path.rename(target)
    (problem,) = _problems(board)
    assert problem.startswith(f"{target}: method.name: unknown method 'no_such_method'")


def test_validate_detects_tampering(board):
    path = _file(board, "simple_avg")
    _edit(path, lambda d: d["scores"].update(topic=99.0), reseal=False)
    problems = _problems(board)
    assert any(p.startswith(f"{path}: entry_sha256: content hash mismatch") for p in problems)
    assert any(p.startswith(f"{path}: normalized:") for p in problems)  # the score no longer adds up either


def test_validate_checks_task_set_and_location(board):
    path = _file(board, "simple_avg")
    _edit(path, lambda d: d["scores"].pop("nli"))
    assert any(f"{path}: scores: has tasks ['sentiment', 'topic'], but the task set is {TASKS3}" == p
               for p in _problems(board))
    elsewhere = board / "v1" / "tiny" / "n1-00000000" / "simple_avg.json"
    elsewhere.parent.mkdir()
    _file(board, "task_arithmetic").rename(elsewhere)
    assert any(p.startswith(f"{elsewhere}: (location): the entry belongs at") for p in _problems(board))


def test_validate_requires_matching_reference_rows(board):
    path = _file(board, "task_arithmetic[lam=0.3]")
    _edit(path, lambda d: d["pretrained"]["scores"].update(nli=34.0) or d["pretrained"].update(
        normalized=norm({"nli": 34.0, "sentiment": 12.0, "topic": 30.5}, TASKS3)))
    (problem,) = _problems(board)
    assert problem.startswith(f"{path}: pretrained.scores.nli: 34.0 differs from 33.0 in ")


def test_validate_checks_method_params(board):
    path = _file(board, "task_arithmetic")
    _edit(path, lambda d: d["method"]["params"].update(lam="big", mu=1))
    problems = _problems(board)
    assert f"{path}: method.params: 'task_arithmetic' has no parameter(s) ['mu']; it has ['lam']" in problems
    assert any(p.startswith(f"{path}: method.params.lam: parameter 'lam': expected float") for p in problems)


def test_validate_cli_exit_codes(board, capsys):
    assert main(["leaderboard", "validate", "--root", str(board)]) == 0
    assert "0 v2 and 3 v1 entries OK" in capsys.readouterr().out
    _edit(_file(board, "simple_avg"), lambda d: d.update(normalized=1.0))
    assert main(["leaderboard", "validate", "--root", str(board)]) == 1
    err = capsys.readouterr().err
    assert f"{_file(board, 'simple_avg')}: normalized:" in err and "1 problem(s)" in err


# --- plugins and submit -----------------------------------------------------------------------

PLUGIN = '''
from merge_bench.merging.delta import weighted_sum
from merge_bench.merging.methods import MergeMethod, Param


class HalfSum(MergeMethod):
    name = "half_sum"
    description = "Half the sum of the task vectors."
    params = (Param("scale", 0.5, "weight of each task vector"),)
    lowrank = True

    def merge(self, deltas, key):
        return weighted_sum(deltas, [self.scale] * len(deltas))
'''


def test_submit_writes_validates_and_guards_overwrites(tmp_path):
    root = tmp_path / "lb"
    result = submit("task_arithmetic", "tiny", root=root, tasks=TASKS3, params={"lam": 0.3}, runner=fake_runner())
    assert result.status == "written" and result.path == _file(root, "task_arithmetic[lam=0.3]")
    assert read_entry(result.path).normalized == pytest.approx(norm(TRUTH["task_arithmetic[lam=0.3]"], TASKS3))
    assert validate_leaderboard(root)[1] == []
    # the same results again (another date): nothing to do
    again = submit("task_arithmetic", "tiny", root=root, tasks=TASKS3, params={"lam": 0.3},
                   runner=fake_runner(created="2026-12-01T00:00:00Z"))
    assert again.status == "unchanged" and read_entry(result.path).provenance.date.month == 11
    moved = copy.deepcopy(TRUTH)
    moved["task_arithmetic[lam=0.3]"]["nli"] = 50.0
    with pytest.raises(ValueError, match="already holds a different result.*--overwrite"):
        submit("task_arithmetic", "tiny", root=root, tasks=TASKS3, params={"lam": 0.3}, runner=fake_runner(moved))
    over = submit("task_arithmetic", "tiny", root=root, tasks=TASKS3, params={"lam": 0.3},
                  runner=fake_runner(moved), overwrite=True)
    assert over.status == "overwritten" and read_entry(result.path).scores["nli"] == 50.0


def test_submit_refuses_an_entry_whose_reference_rows_disagree(tmp_path):
    root = tmp_path / "lb"
    submit("simple_avg", "tiny", root=root, tasks=TASKS3, runner=fake_runner())
    other_base = {**PRETRAINED, "topic": 31.0}
    with pytest.raises(ValueError, match=r"pretrained.scores.topic: 31.0 differs from 30.5"):
        submit("task_arithmetic", "tiny", root=root, tasks=TASKS3, runner=fake_runner(pretrained=other_base))
    assert not _file(root, "task_arithmetic").exists()


def test_submit_a_plugin_file_pins_its_sha256(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("half_sum.py").write_text(PLUGIN)
    truth = {**TRUTH, "half_sum[scale=0.25]": TRUTH["simple_avg"]}
    params = parse_params("half_sum.py:HalfSum", ["scale=0.25"])
    assert params == {"scale": 0.25}
    result = submit("half_sum.py:HalfSum", "tiny", root=tmp_path / "lb", tasks=TASKS3, params=params,
                    runner=fake_runner(truth))
    method = result.entry.method
    assert (method.name, method.key, method.source) == ("half_sum", "half_sum[scale=0.25]", "file")
    assert method.plugin_sha256 == sha(PLUGIN) and method.plugin_spec == "half_sum.py:HalfSum"
    assert validate_leaderboard(tmp_path / "lb")[1] == []  # not registered, but pinned as a plugin file
    Path("half_sum.py").write_text(PLUGIN + "\n# changed\n")
    (problem,) = validate_leaderboard(tmp_path / "lb")[1]
    assert problem.field == "method.plugin_sha256" and "the entry was made with" in problem.message


def test_parse_params_types_and_errors():
    assert parse_params("task_arithmetic", ["lam=0.25"]) == {"lam": 0.25}
    assert parse_params("task_arithmetic", ["task_arithmetic.lam=1"]) == {"lam": 1.0}
    with pytest.raises(ValueError, match="has no parameter 'eta'"):
        parse_params("task_arithmetic", ["eta=3"])
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_params("task_arithmetic", ["lam"])
    with pytest.raises(ValueError, match="cannot read 'x' as float"):
        parse_params("task_arithmetic", ["lam=x"])
