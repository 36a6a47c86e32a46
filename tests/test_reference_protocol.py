"""``--protocol reference``: the STAR reference's items (its util.py draw), inputs and answer matching."""
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from merge_bench.evaluation.reference import (
    BATCH,
    NO_GOLD,
    TASKS,
    process_reference,
    reference_docs,
    reference_golds,
    reference_indices,
    variant_files,
)
from merge_bench.evaluation.tasks import list_tasks, tasks_dir
from merge_bench.evaluation.validation import _load
from rehearsal import rehearsal_env  # noqa: F401  (a fixture)

FIXTURES = Path(__file__).parent / "fixtures"


# ---- an independent re-implementation of the reference's util.py and of its process_dataset choices

def util_random_balanced_sample(rows, label_column, num_samples_per_label):
    label_counts = Counter([r[label_column] for r in rows])
    num_samples_per_label = min(num_samples_per_label, min(label_counts.values()))
    sampled = []
    random.seed(42)
    for label in label_counts.keys():
        label_samples = [r for r in rows if r[label_column] == label]
        sampled.extend(random.sample(label_samples, num_samples_per_label))
    return sampled


def util_random_sample(rows, num_samples):
    random.seed(42)
    return random.sample(list(rows), min(num_samples, len(rows)))


def llama_stsb_subset(rows):
    random.seed(42)
    return [rows[i] for i in random.sample(list(range(len(rows))), 200)]


# (suite, short) -> how the reference's evaluator picks its items (evaluator/*_evaluator.py, process_dataset)
BIG = 10 ** 9
REFERENCE_PICK = {
    **{("flan", t): ("all",) for t in ("sst2", "stsb", "finance")},
    **{("flan", t): ("bal", "label", k) for t, k in (("qqp", 1000), ("mnli", 400), ("rte", 1000), ("qnli", 1000),
                                                     ("hella", 40), ("piqa", 1000), ("mrpc", 1000), ("imdb", 1000),
                                                     ("agnews", 50))},
    ("flan", "boolq"): ("bal", "answer", 80),
    **{("llama", t): ("bal", "label", 150) for t in ("sst2", "wic", "cola", "mnli", "multirc", "rte", "copa", "wsc",
                                                    "qnli", "qqp", "mrpc")},
    ("llama", "cb"): ("all",),
    ("llama", "stsb"): ("stsb",),
    **{("mistral", t): ("rand", k) for t, k in (("ethos", None), ("wino", 200), ("stereo", 200), ("causal", 200),
                                               ("answerable", 200), ("qasc", 200), ("dream", 200), ("ncbi", None),
                                               ("owant", 200), ("amazon", 200), ("msr", None), ("gap", 100),
                                               ("snli", 100), ("argue", None), ("disco", 80), ("math", 100),
                                               ("casino", 75), ("story", 100), ("pubmed", 100), ("sst2", 100))},
}


def util_pick(key, rows):
    how = REFERENCE_PICK[key]
    if how[0] == "all":
        return list(rows)
    if how[0] == "bal":
        return util_random_balanced_sample(rows, how[1], how[2])
    if how[0] == "stsb":
        return llama_stsb_subset(rows)
    return util_random_sample(rows, len(rows) if how[1] is None else how[1])


def test_every_task_the_reference_evaluates_has_a_current_variant():
    assert set(REFERENCE_PICK) == set(TASKS)
    want = variant_files(tasks_dir())
    assert len(want) == 46
    stale = [p.name for p, text in want.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"run scripts/make_reference_tasks.py: {stale}"
    assert not [t for t in list_tasks() if t.name.endswith("_ref")], "reference variants never enter a pool"


def _kwargs(suite: str, short: str) -> dict:
    (info,) = [t for t in list_tasks(suite) if t.short == short]
    cfg = _load(info.yaml_path)
    return {**cfg["dataset_kwargs"], "labels": (cfg.get("metadata") or {}).get("labels")}


def _write_rows(root: Path, kwargs: dict, rows: list[dict]) -> None:
    path = root.joinpath(*kwargs["path"].split("/"), kwargs.get("name") or "default", f"{kwargs['split']}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("key", sorted(TASKS - {("flan", "finance"), ("llama", "stsb")}))
def test_reference_draw_is_utils_draw_on_fixture_rows(key, monkeypatch):
    """finance: test_reference_finance_order; llama stsb draws 200 indices, more than the fixture holds."""
    suite, short = key
    kwargs = _kwargs(suite, short)
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    from merge_bench.evaluation.data import load_split

    rows = load_split(kwargs["path"], kwargs.get("name"), kwargs["split"])
    docs = reference_docs(suite=suite, short=short, **kwargs)
    assert [d["mb_id"] for d in docs] == _ids(util_pick(key, rows), rows, kwargs)


def _ids(picked: list[dict], rows: list[dict], kwargs: dict) -> list[str]:
    """mb_id of each picked row: its id field, or its position in the split (rows are picked as objects)."""
    position = {id(r): i for i, r in enumerate(rows)}
    field = kwargs.get("id_field")
    out = []
    for row in picked:
        value = row[field] if field else position[id(row)]
        out.append("-".join(str(value[k]) for k in sorted(value)) if isinstance(value, dict) else str(value))
    return out


@pytest.mark.parametrize("key", [("flan", "mnli"), ("flan", "boolq"), ("llama", "copa"), ("mistral", "math"),
                                 ("mistral", "ethos"), ("llama", "stsb")])
def test_reference_draw_is_utils_draw_on_a_large_shuffled_split(key, tmp_path, monkeypatch):
    """Hundreds of rows with labels in scrambled hub order: the reference's own items, in its order."""
    suite, short = key
    kwargs = _kwargs(suite, short)
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    from merge_bench.evaluation.data import load_split

    seed_rows = load_split(kwargs["path"], kwargs.get("name"), kwargs["split"])
    shuffle = random.Random(7)
    rows = []
    for i in range(700):
        row = dict(seed_rows[shuffle.randrange(len(seed_rows))])
        if kwargs.get("id_field") and not isinstance(row[kwargs["id_field"]], dict):
            row[kwargs["id_field"]] = f"row{i}" if suite == "mistral" else i
        rows.append(row)
    _write_rows(tmp_path, kwargs, rows)
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path))
    docs = reference_docs(suite=suite, short=short, **kwargs)
    expected = util_pick(key, rows)
    assert [d["mb_id"] for d in docs] == _ids(expected, rows, kwargs)
    assert len(docs) == len(expected) > 50


def test_reference_finance_order(monkeypatch):
    """flan finance: the held-out 10 % of train, in the order train_test_split(test_size=0.1, seed=42) lists it."""
    import datasets

    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    kwargs = _kwargs("flan", "finance")
    from merge_bench.evaluation.data import load_split

    rows = load_split(kwargs["path"], kwargs.get("name"), kwargs["split"])
    held = datasets.Dataset.from_list(rows).train_test_split(test_size=0.1, seed=42)["test"].to_list()
    docs = reference_docs(suite="flan", short="finance", **kwargs)
    assert [{k: d[k] for k in rows[0]} for d in docs] == held


def test_reference_indices_need_labels_for_bal():
    with pytest.raises(ValueError, match="needs one label per row"):
        reference_indices(3, "bal 2")


# ---- the reference's golds and answer matching

def test_flan_batch_gold_bug_uses_the_batch_first_gold():
    rows = [{"label": str(i % 4)} for i in range(2 * BATCH + 3)]
    golds = reference_golds(rows, "flan", "hella", "label")
    assert golds[:BATCH] == [0.0] * BATCH
    assert golds[BATCH:2 * BATCH] == [float(BATCH % 4)] * BATCH
    assert golds[2 * BATCH:] == [float((2 * BATCH) % 4)] * 3
    assert reference_golds([{"answer": False}, {"answer": True}], "flan", "boolq", "answer") == [0.0, 0.0]
    assert reference_golds([{"label": 1}, {"label": 0}], "flan", "mnli", "label") == [1.0, 0.0]


def test_mistral_gold_outside_the_map_takes_the_previous_items():
    rows = [{"output": ["E"]}, {"output": ["C"]}, {"output": ["E"]}, {"output": ["N"]}]
    assert reference_golds(rows, "mistral", "snli", "output") == [NO_GOLD, 1.0, 1.0, 2.0]
    dream = [{"output": ["(B) Drop it."]}, {"output": ["nothing"]}]
    assert reference_golds(dream, "mistral", "dream", "output") == [2.0, 2.0]


def _doc(task: str, gold: float = 0.0, text: str = "") -> dict:
    return {"mb_ref_task": task, "mb_ref_gold": gold, "mb_ref_text": text}


@pytest.mark.parametrize("task,gold,answer,right", [
    ("flan_qqp", 1, "Yes", True),
    ("flan_qqp", 0, "I know", True),            # substring: "no" inside "know"
    ("flan_qqp", 1, "YES", False),              # flan is case-sensitive
    ("flan_qnli", 1, "yes and no", True),       # the map's first class (no) wins, not the first in the text
    ("flan_piqa", 0, "Option 1", True),
    ("llama_qnli", 0, "TRUE", True),            # llama lower-cases both
    ("llama_mnli", 1, "Neither, it is not entailed", False),  # "entail" comes first in the map
    ("mistral_ethos", 1, "Violence", True),
    ("mistral_ethos", 0, "Non violence", True),
    ("mistral_sst2", 2, "POS", True),           # lower-cased text still matches the map's "pos"
    ("mistral_snli", 2, "E", False),            # the map has no E: "e" matches nothing
    ("mistral_dream", 1, "answer: (B)", True),  # starts with "a": option A
    ("mistral_dream", 2, "B", True),
    ("mistral_dream", 3, "(c) Take a break", True),
    ("mistral_dream", 2, "The answer is (B)", False),
    ("mistral_disco", 11, "SINGLE_S_COORD_ANAPHORA", False),  # "single_s_coord" (class 1) is a substring
    ("mistral_stereo", 2, "Profession", True),
])
def test_reference_answer_matching(task, gold, answer, right):
    assert process_reference(_doc(task, float(gold)), [answer]) == {"acc": float(right)}


def test_reference_contains_uses_the_first_reference_as_a_substring():
    doc = _doc("mistral_gap", text="Mary")
    assert process_reference(doc, ["maryland"]) == {"acc": 1.0}
    assert process_reference(doc, [""]) == {"acc": 0.0}


def test_reference_qasc_f1_compares_words_with_characters():
    # answer words {"a", "b"}; the gold "ab" is the character set {"a", "b"}: F1 1.0
    assert process_reference(_doc("mistral_qasc", text="ab"), ["a b"]) == {"f1": 1.0}
    # answer word {"ab"} shares nothing with {"a", "b"}
    assert process_reference(_doc("mistral_qasc", text="ab"), ["ab"]) == {"f1": 0.0}


def test_reference_numbers():
    assert process_reference(_doc("flan_stsb", 2.4), ["-3 points"]) == {"spearman": (3.0, 2.4)}
    assert process_reference(_doc("flan_stsb", 2.4), ["rated 7.5"]) == {"spearman": (7.5, 2.4)}
    assert process_reference(_doc("llama_stsb", 2.4), ["rated 7.5"]) == {"spearman": (5.0, 2.4)}
    assert process_reference(_doc("llama_stsb", 2.4), ["none"]) == {"spearman": (0.0, 2.4)}
    assert reference_golds([{"label": 2.4000000953674316}], "flan", "stsb", "label") == [2.4]


def test_reference_docs_refuse_a_task_the_reference_lacks():
    with pytest.raises(ValueError, match="does not evaluate"):
        reference_docs(path="aps/super_glue", name="boolq", split="validation", gold_field="label", suite="llama",
                       short="boolq")


# ---- the run mode

def test_reference_protocol_runs_in_float32_and_refuses_what_the_reference_lacks(monkeypatch):
    from dataclasses import replace

    from merge_bench.backbones import get_backbone
    from merge_bench.bench.plan import resolve_runtime
    from merge_bench.bench.run import Prepared, RunConfig, with_protocol

    llama = get_backbone("llama")
    ref = with_protocol(llama, RunConfig(backbone="llama", protocol="reference"))
    assert ref.protocol == "reference" and ref.lm_eval_task("sst2") == "llama_sst2_ref"
    assert llama.lm_eval_task("sst2") == "llama_sst2"
    assert resolve_runtime("hf", "cuda", None, ref).dtype == "float32"
    assert resolve_runtime("hf", "cuda", None, replace(ref, protocol="default")).dtype == "bfloat16"
    with pytest.raises(ValueError, match="--dtype bfloat16 with --protocol reference"):
        resolve_runtime("hf", "cuda", "bfloat16", ref)
    with pytest.raises(ValueError, match="goes with --track default"):
        with_protocol(llama, RunConfig(backbone="llama", protocol="reference", track="tuned"))
    with pytest.raises(ValueError, match="unknown protocol"):
        with_protocol(llama, RunConfig(backbone="llama", protocol="paper"))
    with pytest.raises(ValueError, match="does not evaluate tiny's task"):  # before any model is built
        Prepared(RunConfig(backbone="tiny", protocol="reference"), get_backbone("tiny"), dry=True)


def test_the_cli_passes_the_protocol():
    from merge_bench.cli import build_parser
    from merge_bench.commands.run import config_from_args

    args = build_parser().parse_args(["run", "--backbone", "mistral", "--tasks", "paper", "--protocol", "reference"])
    assert config_from_args(args, None).protocol == "reference"
    args = build_parser().parse_args(["run"])
    assert config_from_args(args, None).protocol == "default"


@pytest.mark.slow
def test_a_reference_run_on_the_mistral_mirror_records_its_protocol(rehearsal_env, monkeypatch, tmp_path):
    from merge_bench.bench.run import RunConfig, run_benchmark

    for key, value in rehearsal_env("mistral").items():
        monkeypatch.setenv(key, value)
    common = dict(backbone="mistral", tasks=["dream", "snli"], methods=["simple_avg"], limit=2,
                  cache_dir=tmp_path / "cache", device="cpu", backend="hf")
    ref = run_benchmark(RunConfig(**common, out=tmp_path / "ref", protocol="reference"), progress=False)
    default = run_benchmark(RunConfig(**common, out=tmp_path / "default"), progress=False)
    assert ref["config"]["protocol"] == "reference" and default["config"]["protocol"] == "default"
    assert ref["runtime"]["dtype"] == "float32"
    assert {t["lm_eval_task"] for t in ref["tasks"].values()} == {"mistral_dream_ref", "mistral_snli_ref"}
    assert ref["tasks"]["dream"]["sample_ids_sha256"] != default["tasks"]["dream"]["sample_ids_sha256"]
    assert set(ref["methods"]["simple_avg"]["scores"]) == {"dream", "snli"}


def test_a_row_whose_gold_is_in_no_class_stays_an_item_under_the_reference(tmp_path, monkeypatch):
    from merge_bench.evaluation.data import task_docs

    kwargs = _kwargs("mistral", "ethos")
    rows = [{"input": f"text {i}", "output": [gold], "id": f"e{i}"}
            for i, gold in enumerate(["violence", "not violence", "unclear", "violence"])]
    _write_rows(tmp_path, kwargs, rows)
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path))
    assert len(task_docs(**kwargs)) == 3  # the default protocol drops the row it cannot score
    docs = reference_docs(suite="mistral", short="ethos", **kwargs)
    assert sorted(d["mb_id"] for d in docs) == ["e0", "e1", "e2", "e3"]
    unclear = next(d for d in docs if d["mb_id"] == "e2")
    assert unclear["mb_golds"] == [] and [g[0] for g in unclear["mb_labels"]] == ["not violence", "violence"]
    order = [d["mb_id"] for d in docs]
    previous = docs[order.index("e2") - 1]["mb_ref_gold"] if order.index("e2") else NO_GOLD
    assert unclear["mb_ref_gold"] == previous  # the reference's carried-over gold
