"""The embedded real-data smol suite: its data is traceable to its sources by hash, in the hub schema the real
task YAMLs read, and run through those very YAMLs; validation and training rows never touch a test item;
the adapter pool is what the selection rule kept."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from merge_bench.backbones import get_backbone
from merge_bench.evaluation.data import read_jsonl
from merge_bench.evaluation.quiet import quiet
from merge_bench.evaluation.tasks import list_tasks, task_manager

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tasks" / "smol" / "data"
ADAPTERS = ROOT / "adapters" / "smol"
SOURCES = json.loads((DATA / "SOURCES.json").read_text(encoding="utf-8"))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


train = _load("train_adapters")

# The hub schema of each dataset (field names in the nyu-mll/glue, aps/super_glue, ... rows).
SCHEMA = {
    ("nyu-mll/glue", "sst2"): {"sentence", "label", "idx"},
    ("nyu-mll/glue", "cola"): {"sentence", "label", "idx"},
    ("nyu-mll/glue", "mrpc"): {"sentence1", "sentence2", "label", "idx"},
    ("nyu-mll/glue", "rte"): {"sentence1", "sentence2", "label", "idx"},
    ("aps/super_glue", "cb"): {"premise", "hypothesis", "idx", "label"},
    ("aps/super_glue", "wic"): {"word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx", "label"},
    ("aps/super_glue", "copa"): {"premise", "choice1", "choice2", "question", "idx", "label"},
    ("stanfordnlp/imdb", None): {"text", "label"},
    ("SetFit/ag_news", None): {"text", "label", "label_text"},
    ("financial_phrasebank", "sentences_allagree"): {"sentence", "label"},
    ("CogComp/trec", None): {"text", "coarse_label", "fine_label"},
    ("SetFit/subj", None): {"text", "label", "label_text"},
    ("rotten_tomatoes", None): {"text", "label"},
    ("SetFit/CR", None): {"text", "label", "label_text"},
    ("dair-ai/emotion", "split"): {"text", "label"},
    ("fancyzhx/dbpedia_14", None): {"label", "title", "content"},
}


@pytest.fixture(scope="module")
def manager():
    return task_manager()


def test_every_shipped_file_is_recorded_with_its_hash_and_sources():
    recorded = {s["file"]: s for d in SOURCES["datasets"] for s in d["splits"].values()}
    shipped = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*.jsonl")}
    assert shipped == set(recorded)
    sums = dict(reversed(line.split("  ")) for line in (DATA / "SHA256SUMS").read_text().splitlines())
    for rel, split in recorded.items():
        digest = hashlib.sha256((DATA / rel).read_bytes()).hexdigest()
        assert digest == split["sha256"] == sums[rel], rel
        assert split["rows"] == len(read_jsonl(DATA / rel)), rel
    for d in SOURCES["datasets"]:
        assert d["licence"] and d["sources"], d["task"]
        for src in d["sources"]:
            assert len(src["commit"]) == 40 and len(src["sha256"]) == 64 and src["repo"].count("/") == 1, src


@pytest.mark.parametrize("record", SOURCES["datasets"], ids=lambda d: d["task"])
def test_rows_are_in_the_hub_schema(record):
    fields = SCHEMA[(record["dataset"], record["config"])]
    for split in record["splits"].values():
        rows = read_jsonl(DATA / split["file"])
        assert all(set(r) == fields for r in rows), split["file"]
        gold = record["gold_field"]
        assert all(isinstance(r[gold], int) and not isinstance(r[gold], bool) for r in rows)


def test_the_suite_runs_the_real_suites_yamls(manager):
    """A smol task that has a real-suite YAML includes it: same prompt, same labels, same data path, config and
    split; only the data root (``embedded: smol``) and the sample differ."""
    reused = 0
    for path in sorted((ROOT / "tasks" / "smol").glob("smol_*.yaml")):
        cfg = yaml.safe_load(path.read_text().replace("!function", ""))
        if cfg.get("tag") == "merge_bench_validation" or not str(cfg["include"]).endswith(".yaml"):
            continue
        real = yaml.safe_load((path.parent / cfg["include"]).read_text().replace("!function", ""))
        assert "doc_to_text" not in cfg, path.name  # the prompt is the included task's
        assert cfg["metadata"]["labels"] == real["metadata"]["labels"], path.name
        ours, theirs = cfg["dataset_kwargs"], real["dataset_kwargs"]
        assert ours["embedded"] == "smol"
        assert {k: v for k, v in ours.items() if k not in ("embedded", "sample")} == \
            {k: v for k, v in theirs.items() if k != "sample"}, path.name
        reused += 1
    assert reused >= 8


def test_each_task_loads_with_at_most_200_test_items_and_a_disjoint_validation_set(manager):
    tasks = list_tasks("smol", manager)
    assert len(tasks) == len(SOURCES["datasets"])
    for t in tasks:
        with quiet():
            test = list(manager.load([t.name])["tasks"][t.name].eval_docs)
            val = list(manager.load([f"{t.name}_val"])["tasks"][f"{t.name}_val"].eval_docs)  # raises on overlap
        assert 50 <= len(test) <= 230 and len(val) == 100, t.name  # finance: its 10 % holdout, 227 rows


@pytest.mark.parametrize("short", ["cb", "finance", "trec"])
def test_training_examples_never_hold_a_test_or_validation_text(short, manager):
    name = f"smol_{short}"
    with quiet():
        task = manager.load([name])["tasks"][name]
        held = [task.doc_to_text(d) for d in task.eval_docs]
        val = manager.load([f"{name}_val"])["tasks"][f"{name}_val"]
        held += [val.doc_to_text(d) for d in val.eval_docs]
    pairs = train.smol_examples(short)
    assert pairs and not {p for p, _ in pairs} & set(held)
    labels = {a.lower() for _, a in pairs}
    assert labels <= {str(x).lower() if isinstance(x, str) else str(x[0]).lower()
                      for x in manager.task_index[name].cfg["metadata"]["labels"]}


def test_answers_are_spelled_as_the_prompt_asks():
    sst2 = "Is the sentiment positive or negative? text: '{{sentence}}' Answer with 'Positive' or 'Negative'"
    assert train.answer_spelling("positive", sst2) == "Positive"
    assert train.answer_spelling("no", "Answer ‘Yes’ or ‘No’.") == "No"
    assert train.answer_spelling("maybe", "Answer with 'yes', 'no', or 'maybe' without explanation.") == "maybe"
    assert train.answer_spelling("Sci/Tech", "World, Sports, Business, or Sci/Tech.") == "Sci/Tech"
    assert train.answer_spelling("joy", "no such word here") == "joy"


def test_the_pool_is_what_the_selection_kept():
    selection = json.loads((ADAPTERS / "SELECTION.json").read_text())
    pool = sorted(get_backbone("smol").adapters)
    assert pool == sorted(selection["pool"]) and pool
    for short, t in selection["tasks"].items():
        v, test = t["validation"], t["test"]
        passes = v["lora"] - v["pretrained"] >= 15 and v["lora"] - v["chance"] >= 15
        assert t["kept"] == passes == (short in pool), short
        assert v["n"] == 100 and 0 <= v["chance"] <= 100
        if t["kept"]:  # the suite's target: a kept adapter clears both bars on its test items too
            assert test["lora"] - max(test["pretrained"], test["chance"]) >= 15, short
    expected = {f"{s}/{f}" for s in pool for f in ("adapter_config.json", "adapter_model.safetensors")}
    sums = dict(reversed(line.split("  ")) for line in (ADAPTERS / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == expected
    for rel, digest in sums.items():
        assert hashlib.sha256((ADAPTERS / rel).read_bytes()).hexdigest() == digest, rel


def test_the_readme_table_is_the_selection_record():
    select = _load("select_smol_tasks")
    selection = json.loads((ADAPTERS / "SELECTION.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert select.readme_with_table(readme, selection) == readme, "run scripts/select_smol_tasks.py --readme"
    assert set(selection["tasks"]) <= set(train.suite_tasks("smol"))


def test_adapters_follow_the_one_recipe_of_both_embedded_suites():
    record = json.loads((ADAPTERS / "TRAINING.json").read_text())
    tiny = json.loads((ROOT / "adapters" / "tiny" / "TRAINING.json").read_text())
    assert record["recipe"] == tiny["recipe"]
    trained = {t["task"]: t for t in record["tasks"]}
    for short in get_backbone("smol").adapters:
        cfg = json.loads((ADAPTERS / short / "adapter_config.json").read_text())
        assert (cfg["r"], cfg["lora_alpha"]) == (record["recipe"]["r"], record["recipe"]["alpha"])
        assert trained[short]["steps"] == record["recipe"]["steps"]
        assert trained[short]["seed"] == record["recipe"]["seed"] + train.suite_tasks("smol").index(short)


def test_the_sampler_caps_each_class_and_keeps_a_small_one_whole():
    data = _load("make_smol_data")
    rows = [{"text": f"a{i}", "label": 0} for i in range(300)] + [{"text": f"b{i}", "label": 1} for i in range(150)] + \
        [{"text": f"c{i}", "label": 2} for i in range(5)]
    picked = data._sample(rows, "label", 200)
    assert Counter(r["label"] for r in picked) == {0: 66, 1: 66, 2: 5}
    assert data._sample(list(reversed(rows)), "label", 200) == picked  # content decides, not row order
    without = data._sample([r for r in rows if r != picked[0]], "label", 200)
    assert picked[0] not in without and len(without) == len(picked)  # the next-ranked row of its class steps in
