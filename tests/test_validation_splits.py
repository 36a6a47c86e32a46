"""Validation variants of the tasks (issue 13, part 1): one per task with an adapter, generated from the test
YAMLs by the suites' rules, loaded by lm-eval from each suite's fixtures, never sharing an input with the
test items, and kept out of every test-task listing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from merge_bench.backbones import get_backbone
from merge_bench.evaluation.data import input_text, read_jsonl, task_docs
from merge_bench.evaluation.tasks import list_tasks, suite_group, task_manager, tasks_dir, validation_task
from merge_bench.evaluation.validation import SIZE, variant_files

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def manager():
    return task_manager()


@pytest.fixture(scope="module")
def loaded(manager):
    """Every test task and every validation variant, built by lm-eval from the fixture mirror."""
    names = [t.name for t in list_tasks(manager=manager)] + [t.name for t in list_tasks(manager=manager, validation=True)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
        return manager.load(names)["tasks"]


def test_the_variant_yamls_are_generated_from_the_test_yamls():
    want = variant_files(tasks_dir())
    have = {p: p.read_text(encoding="utf-8") for p in tasks_dir().glob("*/*_val.yaml")}
    assert sorted(have) == sorted(want), "run scripts/make_validation_tasks.py"
    stale = [p.name for p in want if have[p] != want[p]]
    assert not stale, f"stale validation YAMLs {stale}: run scripts/make_validation_tasks.py"


def test_one_variant_per_task_with_an_adapter_and_none_in_the_test_listings(manager):
    tests = list_tasks(manager=manager)
    variants = list_tasks(manager=manager, validation=True)
    assert sorted(v.validation_of for v in variants) == sorted(t.name for t in tests if t.has_adapter)
    assert all(v.name == f"{v.validation_of}_val" for v in variants)
    assert not any(t.name.endswith("_val") for t in tests)
    for suite in {t.suite for t in tests}:       # never in a suite's group, never in a backbone's pool
        assert not any(n.endswith("_val") for n in manager.task_index[suite_group(suite)].cfg["task"])
    for name in ("tiny", "flan", "llama", "mistral"):
        assert not any(t.endswith("_val") for t in get_backbone(name).tasks)


def test_each_suite_follows_its_rule(manager):
    v = {t.validation_of: t for t in list_tasks(manager=manager, validation=True)}
    assert (v["tiny_digit"].split, v["tiny_digit"].sample) == ("validation", "all")
    assert (v["mistral_sst2"].split, v["mistral_sst2"].sample) == ("valid", f"rand {SIZE}")
    assert (v["llama_rte"].split, v["llama_rte"].sample) == ("train", "bal 50")          # balanced test: balanced
    assert (v["llama_mnli"].config, v["llama_mnli"].sample) == ("mnli", "bal 33")         # train is in `mnli`
    assert (v["llama_stsb"].split, v["llama_stsb"].sample) == ("train", f"rand {SIZE}")   # a regression task
    assert (v["flan_finance"].split, v["flan_finance"].holdout) == ("train", "10% holdout, seed 42")
    assert validation_task("llama_cb", manager=manager).name == "llama_cb_val"
    with pytest.raises(ValueError, match="'llama_axb' has no validation variant"):
        validation_task("llama_axb", manager=manager)       # no adapter, no tuning


def test_every_variant_loads_and_shares_no_input_with_its_test_items(manager, loaded):
    for v in list_tasks(manager=manager, validation=True):
        val, test = list(loaded[v.name].eval_docs), list(loaded[v.validation_of].eval_docs)
        assert val, v.name
        kwargs = manager.task_index[v.name].cfg["dataset_kwargs"]
        fields = (kwargs["gold_field"], kwargs.get("id_field"), kwargs.get("labels_field"))
        assert not {input_text(d, *fields) for d in val} & {input_text(d, *fields) for d in test}, v.name
        assert len({d["mb_id"] for d in val}) == len(val), v.name
        assert loaded[v.name].doc_to_text(val[0]).strip() and val[0]["mb_golds"], v.name
        if v.suite == "tiny":
            assert len(val) == SIZE, v.name


def test_a_carved_set_leaves_out_train_rows_that_are_test_items(loaded):
    # the rte train fixture holds one row of the test split (as real GLUE has duplicates across splits)
    train = read_jsonl(FIXTURES / "nyu-mll/glue/rte/train.jsonl")
    test = {(r["sentence1"], r["sentence2"]) for r in read_jsonl(FIXTURES / "nyu-mll/glue/rte/validation.jsonl")}
    assert sum((r["sentence1"], r["sentence2"]) in test for r in train) == 1
    val = list(loaded["llama_rte_val"].eval_docs)
    # 5 train rows left, labels 3 : 2, so "bal 50" keeps 2 per label
    assert len(val) == 4 and not any((d["sentence1"], d["sentence2"]) in test for d in val)
    assert "999" not in {d["mb_id"] for d in val} and {d["mb_id"] for d in val} <= {str(r["idx"]) for r in train}


def test_finance_validation_is_the_rest_of_the_holdout(loaded):
    rows = read_jsonl(FIXTURES / "financial_phrasebank/sentences_allagree/train.jsonl")
    test = [d["sentence"] for d in loaded["flan_finance"].eval_docs]
    val = [d["sentence"] for d in loaded["flan_finance_val"].eval_docs]
    assert sorted(test + val) == sorted(r["sentence"] for r in rows) and not set(test) & set(val)


def test_a_shipped_split_that_overlaps_the_test_set_is_an_error_naming_the_task(tmp_path, monkeypatch):
    root = tmp_path / "Lots-of-LoRAs/task_x/default"
    root.mkdir(parents=True)
    test = [{"id": f"t-{i}", "input": f"Question {i}?  ", "output": ["yes"]} for i in range(4)]
    valid = [{"id": "v-0", "input": "question 2?", "output": ["no"]}, {"id": "v-1", "input": "Other?", "output": ["no"]}]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (root / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path))
    kwargs = dict(path="Lots-of-LoRAs/task_x", split="valid", gold_field="output", id_field="id",
                  labels=["yes", "no"], task="mistral_x")
    with pytest.raises(ValueError, match=r"task mistral_x: its validation set .* shares 1 input texts .*'v-0'"):
        task_docs(**kwargs, disjoint_from={"split": "test", "sample": "all", "drop_overlap": False})
    carved = task_docs(**kwargs, disjoint_from={"split": "test", "sample": "all", "drop_overlap": True})
    assert [d["mb_id"] for d in carved] == ["v-1"]
    with pytest.raises(ValueError, match=r"disjoint_from keys \['spilt'\] unknown"):
        task_docs(**kwargs, disjoint_from={"spilt": "test"})


def test_every_task_with_an_adapter_has_calibration_rows_in_the_fixtures(manager):
    from merge_bench.evaluation.calibration import calibration_kwargs
    from merge_bench.evaluation.data import mirror_file

    for t in list_tasks(manager=manager):
        if not t.has_adapter or t.suite == "tiny" or t.embedded:  # embedded suites ship their train rows
            continue
        kwargs = calibration_kwargs(manager.task_index[t.name].cfg["dataset_kwargs"])
        path = mirror_file(FIXTURES, kwargs["path"], kwargs.get("name"), kwargs["split"])
        assert path.is_file(), f"{t.name}: no calibration fixture {path}"
