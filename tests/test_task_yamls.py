"""Every task YAML under tasks/ (all suites, tiny included once it exists) against the protocol and
end to end through lm-eval on the fixture mirror with the micro Llama."""
import json
import math
from pathlib import Path

import pytest

from merge_bench.cli import main as cli_main
from merge_bench.evaluation.data import export_mirror, holdout_indices, load_split, mirror_file, read_jsonl, task_docs
from merge_bench.evaluation.tasks import list_tasks, suite_group, task_manager, tasks_dir

FIXTURES = Path(__file__).parent / "fixtures"

# The protocol tables (protocol.md), written out independently of the YAMLs: short -> (n, metric, max tokens).
FLAN = {"mnli": "bal 400", "mrpc": "bal 1000", "qnli": "bal 1000", "qqp": "bal 1000", "rte": "bal all",
        "sst2": "all", "stsb": "all", "imdb": "bal 1000", "finance": "all", "agnews": "bal 50", "hella": "bal 40",
        "boolq": "bal 80", "piqa": "bal all"}
LLAMA = {"sst2": "bal 150", "mrpc": "bal 150", "wic": "bal 150", "cola": "bal 150", "mnli": "bal 150",
         "stsb": "rand 200", "cb": "all", "multirc": "bal 150", "rte": "bal 150", "copa": "bal 150", "wsc": "bal 150",
         "qnli": "bal 150", "qqp": "bal 150"}
LLAMA_NO_ADAPTER = {"boolq", "record", "axb", "axg", "wnli"}
MISTRAL = {"ethos": ("all", 10), "wino": ("rand 200", 10), "stereo": ("rand 200", 10), "causal": ("rand 200", 10),
           "answerable": ("rand 200", 10), "qasc": ("rand 200", 10), "dream": ("rand 200", 10), "ncbi": ("all", 20),
           "owant": ("rand 200", 10), "amazon": ("rand 200", 10), "msr": ("all", 10), "gap": ("rand 100", 20),
           "snli": ("rand 100", 2), "argue": ("all", 8), "disco": ("rand 80", 12), "math": ("rand 100", 10),
           "casino": ("rand 75", 10), "story": ("rand 100", 3), "pubmed": ("rand 100", 3), "sst2": ("rand 100", 3)}


@pytest.fixture(scope="module")
def manager():
    return task_manager()


@pytest.fixture(scope="module")
def tasks(manager):
    return {t.name: t for t in list_tasks(manager=manager)}


def test_suites_match_the_protocol_tables(tasks):
    for short, n in FLAN.items():
        t = tasks[f"flan_{short}"]
        assert (t.sample, t.max_new_tokens, t.has_adapter, t.chat_template) == (n, 10, True, False), t.name
        assert t.metric == ("spearman" if short == "stsb" else "acc")
    for short, n in LLAMA.items():
        t = tasks[f"llama_{short}"]
        assert (t.sample, t.max_new_tokens, t.has_adapter, t.chat_template) == (n, 10, True, True), t.name
        assert t.metric == ("spearman" if short == "stsb" else "acc")
    for short in LLAMA_NO_ADAPTER:
        assert not tasks[f"llama_{short}"].has_adapter
    for short, (n, max_tokens) in MISTRAL.items():
        t = tasks[f"mistral_{short}"]
        assert (t.sample, t.max_new_tokens, t.chat_template) == (n, max_tokens, True), t.name
        assert t.metric == {"qasc": "f1"}.get(short, "acc")
        assert t.dataset.startswith("Lots-of-LoRAs/task") and t.split == "test"
    counts = {s: sum(t.suite == s for t in tasks.values()) for s in ("flan", "llama", "mistral")}
    assert counts == {"flan": 13, "llama": 18, "mistral": 20}
    assert tasks["flan_finance"].holdout == "10% holdout, seed 42"
    assert tasks["llama_mnli"].labels == ("Entail", "Neither", "Contradict")
    assert tasks["llama_record"].per_item_labels


def test_every_task_follows_the_conventions(tasks):
    for t in tasks.values():
        assert t.name == f"{t.suite}_{t.short}"
        assert t.metric in {"acc", "spearman", "f1"}
        assert t.version and t.max_new_tokens > 0
        assert t.labels or t.per_item_labels or t.metric != "acc" or t.short in {"ncbi", "gap"}, t.name


def test_one_group_per_suite_holding_the_tasks_with_adapters(manager, tasks):
    for suite in sorted({t.suite for t in tasks.values()}):
        group = suite_group(suite)
        assert group in manager.all_groups, f"no group {group}"
        members = set(manager.task_index[group].cfg["task"])
        assert members == {t.name for t in tasks.values() if t.suite == suite and t.has_adapter}, group


def _fixture_or_embedded(t) -> Path:
    if t.dataset.startswith("merge-bench/") or t.embedded:
        return mirror_file(tasks_dir() / (t.embedded or "tiny") / "data", t.dataset, t.config, t.split)
    return mirror_file(FIXTURES, t.dataset, t.config, t.split)


def test_every_dataset_has_a_fixture_in_the_hub_schema(tasks):
    for t in tasks.values():
        path = _fixture_or_embedded(t)
        assert path.is_file(), f"{t.name}: no fixture {path}"
        rows = read_jsonl(path)
        assert rows, path
    kinds = {type(r["output"]).__name__ for p in FIXTURES.glob("Lots-of-LoRAs/*/default/test.jsonl")
             for r in read_jsonl(p)}
    # The hub's Lots-of-LoRAs `output` is a list of references; a string output is still accepted
    # (test_rows_whose_gold_maps_to_no_label_are_dropped).
    assert kinds == {"list"}


@pytest.fixture(scope="module")
def loaded(manager, tasks):
    """Every task built by lm-eval from the fixture mirror (offline)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    try:
        yield manager.load(sorted(tasks))["tasks"]
    finally:
        mp.undo()


def test_every_task_loads_with_string_ids_and_golds(loaded, tasks):
    assert set(loaded) == set(tasks)
    for name, task in loaded.items():
        docs = list(task.eval_docs)
        assert docs, name
        ids = [d["mb_id"] for d in docs]
        assert all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids), name
        for d in docs:
            assert d["mb_golds"] and d["mb_target"] == d["mb_golds"][0], name
            if tasks[name].labels:
                canon = [g[0] for g in d["mb_labels"]]
                assert canon == list(tasks[name].labels) and set(d["mb_golds"]) <= set(canon), name
            assert isinstance(task.doc_to_text(d), str) and task.doc_to_text(d).strip(), name


def _doc(loaded, name, **where):
    return next(d for d in loaded[name].eval_docs if all(d[k] == v for k, v in where.items()))


def test_prompts_are_the_reference_input_formats(loaded):
    qqp = loaded["flan_qqp"]
    d = _doc(loaded, "flan_qqp", idx=1)
    assert qqp.doc_to_text(d) == ("Do the questions ‘How do I learn Python quickly?’ and ‘What is the fastest way to "
                                  "learn Python?’ have the same intent? Answer with ‘yes’ or ‘no’.")
    for d in loaded["flan_piqa"].eval_docs:
        assert loaded["flan_piqa"].doc_to_text(d) == (
            f"Question: {d['goal']}\n    Option 1: {d['sol1']}\n    Option 2: {d['sol2']}\n"
            "    Which option is more appropriate? Respond with 'Option 1' or 'Option 2'.")
    d = _doc(loaded, "flan_hella", ind=24)
    assert loaded["flan_hella"].doc_to_text(d).endswith(
        "0: is using wrap to wrap a pair of skis.\n1: is ripping level tiles off.\n2: is holding a rubik's cube.\n"
        "3: starts pulling up roofing on a roof.\nPlease return 0, 1, 2, or 3 as the correct answer.")
    d = _doc(loaded, "llama_cb", label=2)  # a real neutral row
    assert loaded["llama_cb"].doc_to_text(d) == (
        f"Given the following premise:\n'{d['premise']}'\n\nDoes the hypothesis:\n'{d['hypothesis']}'\n\n"
        "appear to be true based on the premise?\nAnswer with 'yes', 'no', or 'maybe' without explanation.")
    assert d["mb_golds"] == ["maybe"]
    d = next(iter(loaded["mistral_ethos"].eval_docs))
    assert loaded["mistral_ethos"].doc_to_text(d) == d["input"]


def test_golds_map_through_the_label_lists(loaded):
    assert _doc(loaded, "flan_qnli", idx=0)["mb_golds"] == ["yes"]  # qnli 0 = entailment -> yes
    assert _doc(loaded, "llama_qnli", idx=0)["mb_golds"] == ["True"]
    assert _doc(loaded, "llama_wnli", idx=1)["mb_golds"] == ["yes"]  # wnli 1 = entailment
    assert _doc(loaded, "flan_boolq", question="is house tax and property tax are same")["mb_golds"] == ["true"]
    assert _doc(loaded, "flan_agnews", label=3, text=next(
        d["text"] for d in loaded["flan_agnews"].eval_docs if d["label"] == 3))["mb_golds"] == ["Sci/Tech"]
    assert {d["mb_target"] for d in loaded["mistral_ethos"].eval_docs} == {"violence", "not violence"}
    assert {d["mb_target"] for d in loaded["mistral_dream"].eval_docs} == {"(A)", "(B)", "(C)"}
    assert {d["mb_target"] for d in loaded["mistral_sst2"].eval_docs} == {"POS", "NEG"}
    record = _doc(loaded, "llama_record", mb_id="1-1")
    assert record["mb_golds"] == ["Barack Obama", "Obama"] and ["Berlin"] in record["mb_labels"]
    # a dict idx is joined in sorted-key order: answer-paragraph-question
    assert _doc(loaded, "llama_multirc", mb_id="1-0-0")["mb_golds"] == ["yes"]


def test_finance_is_the_reference_holdout_of_train(loaded):
    rows = read_jsonl(FIXTURES / "financial_phrasebank/sentences_allagree/train.jsonl")
    import datasets

    reference = datasets.Dataset.from_list(rows).train_test_split(test_size=0.1, seed=42)["test"]
    docs = list(loaded["flan_finance"].eval_docs)
    assert [d["sentence"] for d in docs] == reference["sentence"]
    assert holdout_indices(30, 0.1, 42) == list(
        datasets.Dataset.from_dict({"i": list(range(30))}).train_test_split(test_size=0.1, seed=42)["test"]["i"])


def test_rows_whose_gold_maps_to_no_label_are_dropped(tmp_path, monkeypatch, caplog):
    target = tmp_path / "Lots-of-LoRAs/task_x/default/test.jsonl"
    target.parent.mkdir(parents=True)
    rows = [{"input": "a", "output": ["Yes"], "id": "t-1"}, {"input": "b", "output": ["Maybe"], "id": "t-2"},
            {"input": "c", "output": "no", "id": "t-3"}]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path))
    docs = task_docs(path="Lots-of-LoRAs/task_x", split="test", gold_field="output", id_field="id",
                     labels=["yes", "no"])
    assert sorted(d["mb_id"] for d in docs) == ["t-1", "t-3"]
    assert "dropped 1 of 3" in caplog.text
    with pytest.raises(ValueError, match="no document"):
        task_docs(path="Lots-of-LoRAs/task_x", split="test", gold_field="output", labels=["true", "false"])
    with pytest.raises(ValueError, match="no field 'answer'"):
        task_docs(path="Lots-of-LoRAs/task_x", split="test", gold_field="answer", labels=["yes", "no"])


def test_a_missing_mirror_file_names_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(tmp_path))
    expected = tmp_path / "nyu-mll" / "glue" / "cola" / "validation.jsonl"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        load_split("nyu-mll/glue", "cola", "validation")
    with pytest.raises(ValueError, match="not a valid mirror path"):
        load_split("../etc", None, "validation")


def test_export_writes_the_mirror_layout_atomically(tmp_path):
    calls = []

    def fetch(path, name, split, revision):  # stands in for the hub: the fixture rows
        assert revision is None
        calls.append((path, name, split))
        return read_jsonl(mirror_file(FIXTURES, path, name, split))

    written = export_mirror(None, tmp_path, fetch=fetch)
    # each split once (flan_mnli and llama_mnli share one), embedded datasets skipped, every fixture used
    assert len(written) == len(calls) == len(set(calls)) == len(list(FIXTURES.rglob("*.jsonl")))
    for path, name, split in calls:
        out = mirror_file(tmp_path, path, name, split)
        assert read_jsonl(out) == read_jsonl(mirror_file(FIXTURES, path, name, split))
    assert not list(tmp_path.rglob("*.tmp"))
    assert ("financial_phrasebank", "sentences_allagree", "train") in calls


def test_without_a_mirror_rows_come_from_datasets_load_dataset(tmp_path, monkeypatch):
    import datasets

    # a local dataset folder stands in for a hub repository: the same load_dataset call reads it
    repo = tmp_path / "repo"
    repo.mkdir()
    source = FIXTURES / "Lots-of-LoRAs/task190_snli_classification/default/test.jsonl"
    (repo / "test.jsonl").write_text(source.read_text())
    monkeypatch.delenv("MERGE_BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    assert load_split(str(repo), None, "test") == read_jsonl(source)


def test_missing_task_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_TASKS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tasks_dir()


def test_cli_lists_a_suite_and_rejects_an_unknown_one(capsys):
    assert cli_main(["tasks", "--suite", "mistral"]) == 0
    out = capsys.readouterr().out
    assert "mistral_disco" in out and "rand 80" in out and "flan_mnli" not in out
    assert len([line for line in out.splitlines() if line.startswith("mistral_")]) == 20
    assert cli_main(["tasks", "--suite", "nope"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


LIMIT = 6  # every fixture fits; the embedded tiny splits (hundreds of rows) are cut to this


def _evaluate(model_dir: Path, names: list[str], manager, chat: bool) -> dict:
    from lm_eval import simple_evaluate

    return simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names,
                           task_manager=manager, device="cpu", batch_size=16, apply_chat_template=chat,
                           limit=LIMIT, log_samples=False, bootstrap_iters=0, verbosity="ERROR")


def test_every_task_runs_end_to_end_with_the_micro_llama(micro_llama, manager, tasks, loaded, monkeypatch):
    """One simple_evaluate per prompt style (plain text / chat template) over every task at once."""
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    for chat in (False, True):
        names = sorted(n for n, t in tasks.items() if t.chat_template == chat)
        out = _evaluate(micro_llama, names, manager, chat)
        for name in names:
            metric = tasks[name].metric
            value = out["results"][name][f"{metric},none"]
            assert isinstance(value, float) and math.isfinite(value), (name, value)
            assert (-1.0 if metric == "spearman" else 0.0) <= value <= 1.0, (name, value)
            assert out["n-samples"][name]["effective"] == min(LIMIT, len(list(loaded[name].eval_docs))), name
            others = [k for k in out["results"][name] if "," in k and not k.endswith("_stderr,none")]
            assert others == [f"{metric},none"], (name, others)
