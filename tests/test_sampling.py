import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from merge_bench.evaluation.data import task_docs
from merge_bench.evaluation.sampling import SampleSpec, content_key, sample_ids_sha256, sample_indices, sample_rows

FIXTURES = Path(__file__).parent / "fixtures"


def make_rows(counts: dict[int, int]) -> list[dict]:
    rows, idx = [], 0
    for label, n in counts.items():
        for _ in range(n):
            rows.append({"sentence": f"sentence number {idx}", "label": label, "idx": idx})
            idx += 1
    return rows


@pytest.mark.parametrize("text, kind, k, shown", [
    ("all", "all", None, "all"), ("rand 200", "rand", 200, "rand 200"), ("bal 400", "bal", 400, "bal 400"),
    ("bal all", "bal", None, "bal all"), ("  RAND   5 ", "rand", 5, "rand 5"), ("rand all", "all", None, "all"),
])
def test_sample_spec_parse(text, kind, k, shown):
    spec = SampleSpec.parse(text)
    assert (spec.kind, spec.k, str(spec)) == (kind, k, shown)


@pytest.mark.parametrize("text", ["some", "bal", "rand -3", "rand 0", "bal 1.5", ""])
def test_sample_spec_rejects(text):
    with pytest.raises(ValueError, match="sample spec"):
        SampleSpec.parse(text)


def test_balanced_counts_capped_at_smallest_class():
    rows = make_rows({0: 30, 1: 7, 2: 12})
    labels = [r["label"] for r in rows]
    keys = [content_key(r) for r in rows]
    got = Counter(labels[i] for i in sample_indices(keys, "bal 5", labels))
    assert got == {0: 5, 1: 5, 2: 5}
    got = Counter(labels[i] for i in sample_indices(keys, "bal 100", labels))
    assert got == {0: 7, 1: 7, 2: 7}
    got = Counter(labels[i] for i in sample_indices(keys, "bal all", labels))
    assert got == {0: 7, 1: 7, 2: 7}


def test_rand_and_all():
    rows = make_rows({0: 10, 1: 10})
    keys = [content_key(r) for r in rows]
    chosen = sample_indices(keys, "rand 6")
    assert len(chosen) == len(set(chosen)) == 6
    assert sorted(sample_indices(keys, "all")) == list(range(20))
    assert len(sample_indices(keys, "rand 500")) == 20
    with pytest.raises(ValueError, match="needs one label per row"):
        sample_indices(keys, "bal 3")


def test_same_sample_every_run_and_under_shuffling():
    rows = make_rows({0: 40, 1: 25})
    first = sample_rows(rows, "bal 10", [r["label"] for r in rows])
    again = sample_rows(rows, "bal 10", [r["label"] for r in rows])
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    third = sample_rows(shuffled, "bal 10", [r["label"] for r in shuffled])
    assert first == again == third
    assert sample_rows(shuffled, "rand 9") == sample_rows(rows, "rand 9")


def test_seed_changes_the_sample_and_adding_rows_keeps_ranks():
    rows = make_rows({0: 50})
    keys = [content_key(r) for r in rows]
    assert sample_indices(keys, "rand 10", seed=42) != sample_indices(keys, "rand 10", seed=43)
    # a row's rank never changes: in the sample of a superset, the old rows come in their old order
    more = make_rows({0: 60})
    old_order = [rows[i]["idx"] for i in sample_indices(keys, "all")]
    new = [more[i]["idx"] for i in sample_indices([content_key(r) for r in more], "rand 20")]
    new_old = [i for i in new if i < 50]
    assert new_old == old_order[: len(new_old)]


def test_sample_ids_sha256_hand_computed():
    assert sample_ids_sha256(["a", "b"]) == hashlib.sha256(b"a\nb").hexdigest()
    assert sample_ids_sha256(["b", "a"]) != sample_ids_sha256(["a", "b"])
    with pytest.raises(ValueError):
        sample_ids_sha256([1, 2])


def test_task_docs_balanced_and_stable_against_a_shuffled_mirror(tmp_path, monkeypatch):
    # 12 rows, 3 labels (5/4/3): bal 2 keeps 2 per label
    labels = [0] * 5 + [1] * 4 + [2] * 3
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": labels[i], "idx": i} for i in range(12)]
    mirror = tmp_path / "a"
    target = mirror / "nyu-mll/glue/mnli_matched/validation.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shuffled = tmp_path / "b"
    other = shuffled / "nyu-mll/glue/mnli_matched/validation.jsonl"
    other.parent.mkdir(parents=True)
    mixed = rows[:]
    random.Random(3).shuffle(mixed)
    other.write_text("".join(json.dumps(r) + "\n" for r in mixed))

    kwargs = dict(path="nyu-mll/glue", name="mnli_matched", split="validation", sample="bal 2", gold_field="label",
                  id_field="idx", labels=["entailment", "neutral", "contradiction"])
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(mirror))
    docs = task_docs(**kwargs)
    assert Counter(d["mb_target"] for d in docs) == {"entailment": 2, "neutral": 2, "contradiction": 2}
    assert all(isinstance(d["mb_id"], str) for d in docs)
    assert task_docs(**kwargs) == docs
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(shuffled))
    assert task_docs(**kwargs) == docs


def test_fixture_sample_is_the_same_on_every_run(monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_DATA_DIR", str(FIXTURES))
    kwargs = dict(path="Lots-of-LoRAs/task834_mathdataset_classification", split="test", sample="rand 3",
                  gold_field="output", id_field="id",
                  labels=["algebra", "arithmetic", "measurement", "numbers", "probability"])
    ids = [d["mb_id"] for d in task_docs(**kwargs)]
    assert len(ids) == 3
    assert [d["mb_id"] for d in task_docs(**kwargs)] == ids
