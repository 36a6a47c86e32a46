"""Datasets for the task YAMLs: hub or offline mirror, gold normalization, seeded sampling.

The offline mirror layout is ``<DATA_DIR>/<dataset_path>/<config or "default">/<split>.jsonl``, one
JSON object per line in the hub dataset's own schema, with DATA_DIR from ``MERGE_BENCH_DATA_DIR``.
Embedded datasets are read from a mirror shipped with the tasks: ``dataset_path`` starting with
``merge-bench/`` (the synthetic tiny suite) from ``tasks/tiny/data``, and a task whose ``dataset_kwargs``
say ``embedded: <folder>`` (the real-data smol suite: hub paths, configs and splits, only the root differs)
from ``tasks/<folder>/data``. Otherwise rows come from ``datasets.load_dataset``.

``load_task_docs`` is the ``custom_dataset`` hook of every task YAML: lm-eval calls it with the task's
``dataset_kwargs`` and ``metadata`` as keyword arguments, and it returns a DatasetDict with one split,
``test``, holding the sampled documents. Each document is the dataset row plus
- ``mb_id`` (str): the row's ``id_field`` value (dicts such as MultiRC's ``idx`` joined by "-" in key
  order), or the row's index in its source split when the dataset has no id;
- ``mb_golds`` (list[str]): the accepted answers. With a label set: the canonical labels of the gold
  (an int or bool gold indexes the label list; a string gold goes through the same label matching as
  generations). Without one: the gold references as strings (stsb's score, qasc's words, ...);
- ``mb_target`` (str): the first of ``mb_golds`` (shown as the target in lm-eval's sample logs);
- ``mb_labels`` (list[list[str]]): the label set, one alias list per class (empty without labels),
  from the YAML's ``metadata.labels`` or, with ``labels_field``, from the row itself (ReCoRD's
  entities).
A row whose gold maps to no label (or that has no gold) cannot be scored: it is dropped before
sampling, with a warning; a split left with no document is an error.

The flan "finance" split (protocol: 10 % of train, split with seed 42) is derived with
``holdout: {test_size: 0.1, seed: 42}``: the held-out rows are those that
``datasets.Dataset.train_test_split(test_size=0.1, seed=42)`` puts in its ``test`` part, which is the
reference's call. That permutation depends only on the number of rows and the seed, so it is the
reference's exact held-out set (the rows the finance adapter was not trained on) provided the
mirror keeps the hub's row order, which ``export_mirror`` does.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .sampling import SampleSpec, content_key, sample_indices
from .scoring import label_groups, match_label, normalize

log = logging.getLogger(__name__)

DATA_DIR_ENV = "MERGE_BENCH_DATA_DIR"
EMBEDDED_PREFIX = "merge-bench/"
TEST_SPLIT = "test"  # the one split name load_task_docs returns; the YAMLs say test_split: test
MB_FIELDS = ("mb_id", "mb_golds", "mb_target", "mb_labels")

Row = dict[str, Any]
Fetch = Callable[[str, "str | None", str, "str | None"], list[Row]]


def mirror_file(root: Path, dataset_path: str, name: str | None, split: str) -> Path:
    """Where a split lives in a mirror rooted at ``root``."""
    parts = [*dataset_path.split("/"), name or "default", f"{split}.jsonl"]
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"dataset {dataset_path!r} (config {name!r}, split {split!r}) is not a valid "
                         "mirror path: expected names like 'nyu-mll/glue', 'mnli_matched', 'validation'")
    return Path(root).joinpath(*parts)


def embedded_root(folder: str = "tiny") -> Path:
    """The data mirror shipped in ``tasks/<folder>/data``."""
    from .tasks import tasks_dir

    if not folder or "/" in folder or folder in (".", ".."):
        raise ValueError(f"embedded data folder {folder!r}: expected a folder name under tasks/, such as 'smol'")
    return tasks_dir() / folder / "data"


def read_jsonl(path: Path) -> list[Row]:
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as JSON lines atomically (a temp file beside the target, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def hub_split(dataset_path: str, name: str | None, split: str, revision: str | None = None) -> list[Row]:
    """One split from the Hugging Face hub (or the datasets cache), as a list of rows."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_path, name, split=split, revision=revision)
    except (ConnectionError, OSError) as err:  # requests' and huggingface_hub's network errors are OSErrors
        raise FileNotFoundError(
            f"dataset {dataset_path} (config {name or 'default'}, split {split}) could not be loaded from the hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); expected the hub to "
            f"be reachable, or a mirror: set {DATA_DIR_ENV} to a folder written by `merge-bench data export`"
        ) from err
    return ds.to_list()


def load_split(dataset_path: str, name: str | None, split: str, revision: str | None = None,
               embedded: str | None = None) -> list[Row]:
    """The rows of one split: embedded mirror, ``MERGE_BENCH_DATA_DIR`` mirror, or the hub."""
    if embedded:
        root, origin = embedded_root(embedded), f"the embedded {embedded} mirror"
    elif dataset_path.startswith(EMBEDDED_PREFIX):
        root, origin = embedded_root(), "the embedded mirror"
    elif os.environ.get(DATA_DIR_ENV):
        root, origin = Path(os.environ[DATA_DIR_ENV]), f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]}"
    else:
        return hub_split(dataset_path, name, split, revision)
    path = mirror_file(root, dataset_path, name, split)
    if not path.is_file():
        hint = ("build it with scripts/make_smol_data.py" if embedded else
                "build it with scripts/make_tiny_data.py" if dataset_path.startswith(EMBEDDED_PREFIX)
                else "fill the mirror with `merge-bench data export --suite S --to DIR`")
        raise FileNotFoundError(f"dataset {dataset_path} (config {name or 'default'}, split {split}): "
                                f"expected {path} in {origin}; {hint}")
    return read_jsonl(path)


def holdout_indices(n: int, test_size: float, seed: int) -> list[int]:
    """Row indices of the ``test`` part of ``Dataset.train_test_split(test_size, seed=seed)``."""
    import datasets

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"holdout test_size must be in (0, 1), got {test_size}")
    index = datasets.Dataset.from_dict({"i": list(range(n))})
    return list(index.train_test_split(test_size=test_size, seed=seed)["test"]["i"])


def _row_id(row: Row, id_field: str | None, index: int) -> str:
    if id_field is None:
        return str(index)
    value = row[id_field]
    if isinstance(value, Mapping):
        return "-".join(str(value[k]) for k in sorted(value))
    return str(value)


def _golds(value: Any, groups: tuple[tuple[str, ...], ...] | None) -> list[str]:
    values = value if isinstance(value, list) else [value]
    golds: list[str] = []
    for v in values:
        if groups is None:
            gold = None if v is None or (isinstance(v, str) and not v.strip()) else str(v)
        elif isinstance(v, (bool, int)):
            gold = groups[int(v)][0] if 0 <= int(v) < len(groups) else None
        elif isinstance(v, str):
            gold = match_label(v, groups)
        else:
            raise ValueError(f"gold value {v!r} of type {type(v).__name__}: expected an int, bool or string "
                             "when the task has labels")
        if gold is not None and gold not in golds:
            golds.append(gold)
    return golds


def _row_labels(row: Row, labels_field: str) -> tuple[tuple[str, ...], ...] | None:
    seen, groups = set(), []
    for entity in row[labels_field]:
        if isinstance(entity, str) and entity.strip() and normalize(entity) not in seen:
            seen.add(normalize(entity))
            groups.append((entity,))
    return tuple(groups) or None


def build_docs(rows: Sequence[tuple[int, Row]], *, gold_field: str, id_field: str | None = None,
               labels: Sequence[Any] | None = None, labels_field: str | None = None,
               where: str = "dataset", keep_unscored: bool = False) -> list[Row]:
    """Documents (row + mb_* fields) for (source index, row) pairs; see the module docstring. ``keep_unscored``:
    a row whose gold maps to no label stays, with no gold (the STAR reference's draw scores every row it drew)."""
    if labels is not None and labels_field is not None:
        raise ValueError(f"{where}: give either metadata.labels or dataset_kwargs.labels_field, not both")
    fixed = label_groups(labels) if labels is not None else None
    docs, dropped = [], []
    for index, row in rows:
        for field in (gold_field, id_field, labels_field):
            if field is not None and field not in row:
                raise ValueError(f"{where}: row {index} has no field {field!r} (fields: {sorted(row)})")
        groups = _row_labels(row, labels_field) if labels_field else fixed
        mb_id = _row_id(row, id_field, index)
        golds = _golds(row[gold_field], groups) if (groups or not labels_field) else []
        if not golds and not keep_unscored:
            dropped.append(mb_id)
            continue
        docs.append({**row, "mb_id": mb_id, "mb_golds": golds, "mb_target": golds[0] if golds else "",
                     "mb_labels": [list(g) for g in groups or ()]})
    if dropped:
        log.warning("%s: dropped %d of %d rows whose gold maps to no label (ids %s...)", where, len(dropped),
                    len(rows), dropped[:5])
    return docs


def input_text(doc: Mapping[str, Any], *fields: str | None) -> str:
    """A document's normalized input text: its string fields other than ``fields`` (gold, id, labels) and
    the mb_* ones, in key order, each normalized; what a validation set must not share with the test."""
    skip = {*MB_FIELDS, *(f for f in fields if f)}
    return "\n".join(normalize(v) for k, v in sorted(doc.items()) if k not in skip and isinstance(v, str))


def task_docs(*, path: str, split: str, gold_field: str, name: str | None = None, sample: str = "all",
              id_field: str | None = None, labels: Sequence[Any] | None = None, labels_field: str | None = None,
              holdout: Mapping[str, Any] | None = None, revision: str | None = None,
              disjoint_from: Mapping[str, Any] | None = None, task: str | None = None,
              embedded: str | None = None) -> list[Row]:
    """A task's sampled documents, in sample order.

    ``holdout: {test_size, seed, part}`` keeps the ``test`` part of the seeded split (default) or the
    ``rest``. ``disjoint_from`` (a validation variant's test protocol: name, split, sample, holdout and
    ``drop_overlap``) loads the test items with the same fields and labels; with ``drop_overlap`` rows whose
    input text is a test item's leave the pool before sampling, and any overlap left is an error.
    """
    where = f"{path} ({name or 'default'}, {split})"
    spec = SampleSpec.parse(sample)
    rows = load_split(path, name, split, revision, embedded)
    if holdout is not None:
        unknown = sorted(set(holdout) - {"test_size", "seed", "part"})
        if unknown:
            raise ValueError(f"{where}: holdout keys {unknown} unknown; expected test_size, seed and part")
        part = holdout.get("part", "test")
        if part not in ("test", "rest"):
            raise ValueError(f"{where}: holdout part {part!r}: expected 'test' or 'rest'")
        held = holdout_indices(len(rows), float(holdout["test_size"]), int(holdout["seed"]))
        keep = held if part == "test" else sorted(set(range(len(rows))) - set(held))
        pairs = [(i, rows[i]) for i in keep]
        where += f" {holdout['test_size']:.0%} holdout seed {holdout['seed']}" + (" (the rest)" if part == "rest" else "")
    else:
        pairs = list(enumerate(rows))
    docs = build_docs(pairs, gold_field=gold_field, id_field=id_field, labels=labels,
                      labels_field=labels_field, where=where)
    banned: set[str] = set()
    if disjoint_from is not None:
        test_kwargs = {k: v for k, v in disjoint_from.items() if k != "drop_overlap"}
        unknown = sorted(set(test_kwargs) - {"name", "split", "sample", "holdout"})
        if unknown:
            raise ValueError(f"{where}: disjoint_from keys {unknown} unknown; expected name, split, sample, holdout")
        test = task_docs(path=path, gold_field=gold_field, id_field=id_field, labels=labels,
                         labels_field=labels_field, revision=revision, embedded=embedded,
                         **{"name": name, **test_kwargs})
        banned = {input_text(d, gold_field, id_field, labels_field) for d in test}
        if disjoint_from.get("drop_overlap"):
            before = len(docs)
            docs = [d for d in docs if input_text(d, gold_field, id_field, labels_field) not in banned]
            if len(docs) < before:
                log.info("%s: left out %d rows whose input text is a test item's", where, before - len(docs))
    # The content key is the source row's (the fields build_docs added are left out).
    keys = [content_key({k: v for k, v in d.items() if k not in MB_FIELDS}) for d in docs]
    chosen = sample_indices(keys, spec, [d["mb_target"] for d in docs] if spec.kind == "bal" else None)
    if not chosen:
        raise ValueError(f"{where}: no document to evaluate (empty split, or no gold maps to a label)")
    overlap = [docs[i]["mb_id"] for i in chosen if input_text(docs[i], gold_field, id_field, labels_field) in banned]
    if overlap:
        raise ValueError(f"task {task or path}: its validation set {where} shares {len(overlap)} input texts with "
                         f"its test set (ids {overlap[:5]}); validation items must never be test items")
    return [docs[i] for i in chosen]


def load_task_docs(*, path: str, split: str, gold_field: str, name: str | None = None, sample: str = "all",
                   id_field: str | None = None, labels_field: str | None = None,
                   holdout: Mapping[str, Any] | None = None, revision: str | None = None,
                   labels: Sequence[Any] | None = None, embedded: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` hook: ``dataset_kwargs`` and ``metadata`` arrive as keywords
    (``labels`` is a metadata key; the other metadata, such as ``version``, is ignored here)."""
    import datasets

    docs = task_docs(path=path, split=split, gold_field=gold_field, name=name, sample=sample, id_field=id_field,
                     labels=labels, labels_field=labels_field, holdout=holdout, revision=revision, embedded=embedded)
    return datasets.DatasetDict({TEST_SPLIT: datasets.Dataset.from_list(docs)})


def load_validation_docs(*, path: str, split: str, gold_field: str, disjoint_from: Mapping[str, Any],
                         name: str | None = None, sample: str = "all", id_field: str | None = None,
                         labels_field: str | None = None, holdout: Mapping[str, Any] | None = None,
                         revision: str | None = None, labels: Sequence[Any] | None = None, suite: str | None = None,
                         short: str | None = None, embedded: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` hook of the validation variants (``evaluation.validation``): the documents of
    ``dataset_kwargs``, checked disjoint from the test items that ``disjoint_from`` names.

    A hook of its own so that ``load_task_docs`` keeps its source: lm-eval serializes a hook's source into
    the task config, whose hash keys every cached result and is in every leaderboard entry."""
    import datasets

    docs = task_docs(path=path, split=split, gold_field=gold_field, name=name, sample=sample, id_field=id_field,
                     labels=labels, labels_field=labels_field, holdout=holdout, revision=revision,
                     disjoint_from=disjoint_from, task=f"{suite}_{short}" if suite and short else None,
                     embedded=embedded)
    return datasets.DatasetDict({TEST_SPLIT: datasets.Dataset.from_list(docs)})


def export_mirror(suite: str | None, to_dir: Path, fetch: Fetch | None = None) -> list[Path]:
    """Download every split the suite's tasks, their validation variants and their calibration sets read (``suite`` None: all suites) into a mirror at
    ``to_dir``, in the hub's row order; embedded datasets are skipped. Returns the files written."""
    from .tasks import list_tasks

    fetch = fetch or hub_split
    from .validation import TRAIN_CONFIG

    tasks = [*list_tasks(suite), *list_tasks(suite, validation=True)]  # the tuned track reads the latter
    tasks = [t for t in tasks if not (t.embedded or t.dataset.startswith(EMBEDDED_PREFIX))]  # shipped already
    wanted = {(t.dataset, t.config, t.split): t.revision for t in tasks}
    for t in tasks:  # RegMean's calibration rows: each task's train split (evaluation.calibration)
        if t.has_adapter and t.validation_of is None:
            wanted.setdefault((t.dataset, TRAIN_CONFIG.get((t.dataset, t.config), t.config), "train"), t.revision)
    written = []
    for (dataset_path, name, split), revision in sorted(wanted.items(), key=lambda kv: str(kv[0])):
        target = mirror_file(Path(to_dir), dataset_path, name, split)
        log.info("exporting %s (%s, %s) to %s", dataset_path, name or "default", split, target)
        written.append(write_jsonl(target, fetch(dataset_path, name, split, revision)))
    return written
