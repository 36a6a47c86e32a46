"""The STAR reference protocol (``merge-bench run --protocol reference``): the paper's items, inputs and scoring.

Its only purpose is to reproduce the STAR README's numbers. Every task of flan, llama and mistral that the
reference evaluates has a variant ``<task>_ref`` beside its YAML (tag ``merge_bench_reference``; it includes
the test YAML, so the prompt, split, sample size and metric are the test task's) whose documents come from
``load_reference_docs`` and whose answers are scored by ``process_reference``:

- **Items**: the reference's draw (its ``util.py``) over the split in the hub's row order: Python's
  ``random`` seeded with 42, then "bal k" takes ``random.sample`` of each label's rows in turn (labels in
  order of first appearance, k capped at the smallest class), "rand k" one ``random.sample`` of k rows, and
  "all" the split as listed (flan, llama) or shuffled by ``random.sample`` (mistral). The order of the items
  is the reference's too (it matters below). A mirror written by ``merge-bench data export`` keeps the hub's
  row order; a revision pinned in a YAML (``dataset_kwargs.revision``) is passed to the hub.
- **Answers**: the reference's label maps in their order and its substring matching: flan case-sensitive,
  llama on lower-cased text, mistral on lower-cased text with the map's own spellings (so an upper-case
  form never matches); the first class of the map with a form anywhere in the answer wins. mistral dream:
  the answer starts with "(a)" or "a" (likewise b, c); ncbi and gap: the first reference, lower-cased, is a
  substring; qasc: F1 between the answer's whitespace words and the *characters* of the first reference.
  stsb: the first match of ``[-+]?\\d*\\.\\d+|\\d+`` (llama clamped to [0, 5]) against the gold rounded
  to one decimal.
- **Its bugs** (the leaderboard's protocol notes): flan hella and boolq score every item of a batch of 16
  against the batch's first gold; mistral items whose gold is in no class take the previous item's class
  (the first such item counts as wrong: the reference stops there with an error).
- **The model input** (``hf_backend``, ``vllm_lm``): float32, the chat string tokenized with the tokenizer's
  own BOS added (llama and mistral see two BOS tokens), flan cut at 511 tokens + ``</s>``.
Not reproduced: the reference's batch padding (mistral batches of 8; greedy outputs differ from ours only
through padded-batch numerics).
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data import build_docs, holdout_indices, load_split
from .sampling import SampleSpec
from .tasks import REFERENCE_SUFFIX as SUFFIX, REFERENCE_TAG as TAG

SEED = 42
BATCH = 16  # the flan runner's batch size: hella's and boolq's gold is the batch's first item's
NO_GOLD = -999.0  # a mistral item before any item whose gold is in a class: never counted right
SHUFFLED_ALL = frozenset({"mistral"})  # "all" is a random.sample of the whole split (util.random_sample)
BATCH_GOLD = frozenset({("flan", "hella"), ("flan", "boolq")})

Classes = tuple[tuple[int, tuple[str, ...]], ...]

# The reference's text_label_map of each task, in its order: (class id, spellings).
_YES_NO: Classes = ((0, ("no", "No")), (1, ("yes", "Yes")))
_YES1_NO2: Classes = ((1, ("Yes", "yes")), (2, ("No", "no")))
LABEL_MAPS: dict[tuple[str, str], Classes] = {
    ("flan", "qqp"): _YES_NO,
    ("flan", "mnli"): ((0, ("entailment", "Entailment")), (1, ("neutral", "Neutral")),
                       (2, ("contradiction", "Contradiction", "contradict", "Contradict"))),
    ("flan", "mrpc"): _YES_NO,
    ("flan", "qnli"): ((1, ("no", "No")), (0, ("yes", "Yes"))),
    ("flan", "rte"): ((1, ("no", "No")), (0, ("yes", "Yes"))),
    ("flan", "sst2"): ((1, ("positive", "Positive")), (0, ("negative", "Negative"))),
    ("flan", "imdb"): ((1, ("positive", "Positive")), (0, ("negative", "Negative"))),
    ("flan", "finance"): ((2, ("positive", "Positive")), (1, ("neutral", "Neutral")), (0, ("negative", "Negative"))),
    ("flan", "agnews"): ((0, ("World", "world")), (1, ("Sports", "sports")), (2, ("Business", "business")),
                         (3, ("Sci/Tech", "Sci/tech", "sci/tech"))),
    ("flan", "hella"): ((0, ("0",)), (1, ("1",)), (2, ("2",)), (3, ("3",))),
    ("flan", "boolq"): ((1, ("True", "true")), (0, ("False", "false"))),
    ("flan", "piqa"): ((1, ("2",)), (0, ("1",))),
    ("llama", "multirc"): _YES_NO,
    ("llama", "wic"): _YES_NO,
    ("llama", "wsc"): ((1, ("yes", "Yes")), (0, ("no", "No"))),
    ("llama", "cb"): ((0, ("yes", "Yes")), (1, ("no", "No")), (2, ("maybe", "Maybe"))),
    ("llama", "cola"): _YES_NO,
    ("llama", "mrpc"): _YES_NO,
    ("llama", "sst2"): ((1, ("positive", "Positive")), (0, ("negative", "Negative"))),
    ("llama", "qqp"): ((1, ("yes", "Yes")), (0, ("no", "No"))),
    ("llama", "qnli"): ((1, ("false", "False")), (0, ("true", "True"))),
    ("llama", "mnli"): ((0, ("entail", "Entail", "entailment", "Entailment")), (1, ("neither", "Neither")),
                        (2, ("contradiction", "Contradiction", "contradict", "Contradict"))),
    ("llama", "copa"): ((1, ("choice2", "Choice2")), (0, ("choice1", "Choice1"))),
    ("llama", "rte"): ((1, ("no", "No")), (0, ("yes", "Yes"))),
    ("mistral", "ethos"): ((0, ("not violence", "not_violence", "non violence", "non_violence")), (1, ("violence",))),
    ("mistral", "wino"): ((1, ("a", "A")), (0, ("b", "B"))),
    ("mistral", "stereo"): ((1, ("gender", "Gender")), (2, ("profession", "Profession")), (3, ("race", "Race")),
                            (4, ("religion", "Religion"))),
    ("mistral", "causal"): ((0, ("not plausible", "not_plausible", "non plausible", "non_plausible")),
                            (1, ("plausible",))),
    ("mistral", "answerable"): ((0, ("not answerable", "Not Answerable", "Not_Answerable", "not_answerable")),
                                (1, ("answerable", "Answerable"))),
    ("mistral", "dream"): ((1, ("(A)", "(a)")), (2, ("(B)", "(b)")), (3, ("(C)", "(c)"))),
    ("mistral", "owant"): _YES1_NO2,
    ("mistral", "amazon"): ((1, ("True", "true")), (2, ("False", "false"))),
    ("mistral", "msr"): ((1, ("Good", "good")), (2, ("Bad", "bad"))),
    ("mistral", "snli"): ((1, ("C", "c")), (2, ("N", "n"))),
    ("mistral", "argue"): ((1, ("in favor", "in_favor", "In Favor", "In favor")), (2, ("against", "Against"))),
    ("mistral", "disco"): tuple((i + 1, (name, name.lower())) for i, name in enumerate((
        "SINGLE_S_COORD", "SINGLE_CATAPHORA", "SINGLE_CONN_INNER", "SINGLE_APPOSITION", "SINGLE_VP_COORD",
        "SINGLE_CONN_START", "PAIR_ANAPHORA", "PAIR_CONN", "SINGLE_RELATIVE", "SINGLE_CONN_INNER_ANAPHORA",
        "SINGLE_S_COORD_ANAPHORA", "PAIR_CONN_ANAPHORA", "PAIR_NONE"))),
    ("mistral", "math"): ((1, ("Algebra", "algebra")), (2, ("Arithmetic", "arithmetic")),
                          (3, ("Measurement", "measurement")), (4, ("Numbers", "numbers")),
                          (5, ("Probability", "probability"))),
    ("mistral", "casino"): _YES1_NO2,
    ("mistral", "story"): _YES1_NO2,
    ("mistral", "pubmed"): _YES1_NO2,
    ("mistral", "sst2"): ((1, ("NEG", "neg", "negative", "Negative")), (2, ("POS", "pos", "positive", "Positive"))),
}
# Tasks scored otherwise than by the label map.
SCORERS: dict[tuple[str, str], str] = {
    ("flan", "stsb"): "number", ("llama", "stsb"): "number_clamped", ("mistral", "dream"): "dream",
    ("mistral", "ncbi"): "contains", ("mistral", "gap"): "contains", ("mistral", "qasc"): "f1",
}
TASKS = frozenset({*LABEL_MAPS, *SCORERS})
_REF_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")


def has_reference(suite: str, short: str) -> bool:
    return (suite, short) in TASKS


# ---- the draw

def reference_indices(n_rows: int, spec: "str | SampleSpec", labels: Sequence[Any] | None = None,
                      shuffle_all: bool = False) -> list[int]:
    """Row indices the reference evaluates, in its order (see the module docstring)."""
    spec = SampleSpec.parse(spec)
    rng = random.Random(SEED)  # the reference calls random.seed(42) once, right before drawing
    if spec.kind == "all":
        return rng.sample(range(n_rows), n_rows) if shuffle_all else list(range(n_rows))
    if spec.kind == "rand":
        return rng.sample(range(n_rows), min(spec.k, n_rows))
    if labels is None or len(labels) != n_rows:
        raise ValueError(f"sample spec '{spec}' needs one label per row ({n_rows} rows)")
    members: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):  # dict order = order of first appearance, as collections.Counter's
        members.setdefault(label, []).append(i)
    if not members:
        return []
    per_label = min(len(m) for m in members.values())
    if spec.k is not None:
        per_label = min(spec.k, per_label)
    return [i for rows in members.values() for i in rng.sample(rows, per_label)]


# ---- golds and answers

def _first_reference(value: Any) -> str:
    return str(value[0]) if isinstance(value, list) else str(value)


def _class_of(text: str, classes: Classes) -> int | None:
    """The reference's gold lookup: the class whose spellings include ``text`` exactly."""
    return next((cid for cid, forms in classes if text in forms), None)


def reference_golds(rows: Sequence[Mapping[str, Any]], suite: str, short: str, gold_field: str) -> list[float]:
    """Each item's gold as the reference computes it, in the reference's item order."""
    key = (suite, short)
    values = [row[gold_field] for row in rows]
    kind = SCORERS.get(key)
    if kind in ("number", "number_clamped"):
        return [round(float(v), 1) for v in values]
    if kind in ("contains", "f1"):
        return [0.0] * len(rows)  # scored against the first reference text (mb_ref_text)
    if suite in ("flan", "llama"):
        if key in BATCH_GOLD:  # a batch's items all take its first item's gold (the text of the hub's label)
            own = [_class_of(str(v), LABEL_MAPS[key]) for v in values]
            return [float(own[(i // BATCH) * BATCH]) for i in range(len(rows))]
        return [float(int(v)) for v in values]
    golds, last = [], NO_GOLD  # mistral: a gold in no class keeps the previous item's
    for v in values:
        text = _first_reference(v)
        if kind == "dream":
            found = next((cid for cid, letter in ((1, "(A)"), (2, "(B)"), (3, "(C)")) if text.startswith(letter)), None)
        else:
            found = _class_of(text, LABEL_MAPS[key])
        last = float(found) if found is not None else last
        golds.append(last)
    return golds


def predict_class(text: str, suite: str, short: str) -> int:
    """The reference's prediction from a generated answer: a class id, or -1 for none."""
    key = (suite, short)
    if SCORERS.get(key) == "dream":
        answer = text.strip().lower()
        return next((cid for cid, letter in ((1, "a"), (2, "b"), (3, "c"))
                     if answer.startswith(f"({letter})") or answer.startswith(letter)), -1)
    answer = {"flan": text.strip(), "llama": text.lower(), "mistral": text.strip().lower()}[suite]
    for cid, forms in LABEL_MAPS[key]:
        for form in forms:
            if (form.lower() if suite == "llama" else form) in answer:
                return cid
    return -1


def reference_number(text: str, clamp: bool) -> float:
    found = _REF_NUMBER.search(text.strip())
    value = float(found.group()) if found else 0.0
    return max(0.0, min(5.0, value)) if clamp else value


def reference_f1(text: str, gold: str) -> float:
    """The reference's qasc F1: the answer's set of whitespace words against the set of the gold's characters."""
    predicted = set(text.strip().lower().split())
    truth = {ch.lower() for ch in gold}
    common = predicted & truth
    precision = len(common) / len(predicted) if predicted else 0.0
    recall = len(common) / len(truth) if truth else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def process_reference(doc: dict, results: Sequence[str]) -> dict[str, Any]:
    """lm-eval hook of the ``_ref`` variants: the reference's score of the one generated answer."""
    if len(results) != 1:
        raise ValueError(f"expected one generation per document, got {len(results)}")
    text, (suite, short) = results[0], doc["mb_ref_task"].split("_", 1)
    kind = SCORERS.get((suite, short))
    if kind in ("number", "number_clamped"):
        return {"spearman": (reference_number(text, kind == "number_clamped"), float(doc["mb_ref_gold"]))}
    if kind == "f1":
        return {"f1": reference_f1(text, doc["mb_ref_text"])}
    if kind == "contains":
        answer = text.strip().lower()
        return {"acc": float(bool(answer) and doc["mb_ref_text"].lower() in answer)}
    return {"acc": float(predict_class(text, suite, short) == doc["mb_ref_gold"])}


# ---- the lm-eval hook and the YAML variants

def reference_docs(*, path: str, split: str, gold_field: str, suite: str, short: str, name: str | None = None,
                   sample: str = "all", id_field: str | None = None, labels: Sequence[Any] | None = None,
                   labels_field: str | None = None, holdout: Mapping[str, Any] | None = None,
                   revision: str | None = None) -> list[dict]:
    """The reference's items of a task, in its order, as documents (``data.build_docs``) with ``mb_ref_task``,
    ``mb_ref_gold`` (its gold class id or score) and ``mb_ref_text`` (its first reference)."""
    if not has_reference(suite, short):
        raise ValueError(f"task {suite}_{short}: the STAR reference does not evaluate it; --protocol reference "
                         f"covers {', '.join(sorted(f'{s}_{t}' for s, t in TASKS))}")
    rows = load_split(path, name, split, revision)
    order = list(range(len(rows)))
    if holdout is not None:  # flan finance: the reference evaluates the holdout in its own order
        order = holdout_indices(len(rows), float(holdout["test_size"]), int(holdout["seed"]))
    spec = SampleSpec.parse(sample)
    labels_of = [rows[i][gold_field] for i in order] if spec.kind == "bal" else None
    picked = [order[j] for j in reference_indices(len(order), spec, labels_of, suite in SHUFFLED_ALL)]
    where = f"{path} ({name or 'default'}, {split}) reference draw"
    # The reference scores every row it drew, also one whose gold is in none of our classes.
    built = build_docs([(i, rows[i]) for i in picked], gold_field=gold_field, id_field=id_field, labels=labels,
                       labels_field=labels_field, where=where, keep_unscored=True)
    golds = reference_golds([rows[i] for i in picked], suite, short, gold_field)
    docs = [{**doc, "mb_ref_task": f"{suite}_{short}", "mb_ref_gold": gold,
             "mb_ref_text": _first_reference(rows[i][gold_field])} for i, doc, gold in zip(picked, built, golds)]
    if not docs:
        raise ValueError(f"{where}: no document to evaluate (empty split)")
    return docs


def load_reference_docs(*, path: str, split: str, gold_field: str, suite: str, short: str, name: str | None = None,
                        sample: str = "all", id_field: str | None = None, labels_field: str | None = None,
                        holdout: Mapping[str, Any] | None = None, revision: str | None = None,
                        labels: Sequence[Any] | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` hook of the ``_ref`` variants (``dataset_kwargs`` and ``metadata`` as keywords)."""
    import datasets

    from .data import TEST_SPLIT

    docs = reference_docs(path=path, split=split, gold_field=gold_field, suite=suite, short=short, name=name,
                          sample=sample, id_field=id_field, labels=labels, labels_field=labels_field,
                          holdout=holdout, revision=revision)
    return datasets.DatasetDict({TEST_SPLIT: datasets.Dataset.from_list(docs)})


def render(test_yaml: Path, task: str) -> str:
    """The text of the reference variant of ``task``, defined in ``test_yaml``."""
    return (f"# The STAR reference protocol's variant of {task} (merge-bench run --protocol reference): generated by\n"
            f"# scripts/make_reference_tasks.py from {Path(test_yaml).name}; see merge_bench/evaluation/reference.py.\n"
            f"include: {Path(test_yaml).name}\ntask: {task}{SUFFIX}\ntag: {TAG}\n"
            "custom_dataset: !function utils.load_reference_docs\n"
            "process_results: !function utils.process_reference\n")


def variant_files(tasks_root: Path) -> dict[Path, str]:
    """Every reference variant that should exist under ``tasks_root``: path -> text."""
    from .validation import _load

    out = {}
    for path in sorted(Path(tasks_root).glob("*/*.yaml")):
        cfg = _load(path)
        meta = cfg.get("metadata") or {}
        if not isinstance(cfg.get("task"), str) or "group" in cfg or "tag" in cfg or not cfg.get("dataset_kwargs"):
            continue
        if has_reference(str(meta.get("suite")), str(meta.get("short"))):
            out[path.with_name(f"{cfg['task']}{SUFFIX}.yaml")] = render(path, cfg["task"])
    return out
