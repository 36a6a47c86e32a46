"""The task registry: what the YAMLs under the repository's ``tasks/`` folder define.

Task YAML conventions (every suite, the embedded ``tiny`` one included):
- ``task: <suite>_<short>``; ``metadata`` holds ``version``, ``suite``, ``short``, ``has_adapter``
  (default true) and, for label-matched tasks, ``labels`` (one class per entry: a string or a list
  ``[canonical, alias, ...]``; list position = class id for int golds);
- ``custom_dataset: !function utils.load_task_docs`` with ``dataset_kwargs`` ``path``, ``name``
  (config; omit for none), ``split``, ``sample`` ("all", "rand k", "bal k", "bal all"),
  ``gold_field``, optional ``id_field``, ``labels_field``, ``holdout``, ``revision``
  (see ``merge_bench.data``); ``test_split: test``;
- a validation variant ``<task>_val`` (tag ``merge_bench_validation``, see ``evaluation.validation``)
  includes the test YAML and restates ``dataset_kwargs``; ``list_tasks`` leaves the variants out unless
  asked, so they never enter a backbone's pool, a suite group or a mirror export by accident;
- a reference variant ``<task>_ref`` (tag ``merge_bench_reference``, see ``evaluation.reference``) includes
  the test YAML and swaps in the STAR reference's draw and scoring (``--protocol reference``); like the
  validation variants, ``list_tasks`` never lists them;
- greedy ``generate_until`` with ``generation_kwargs.max_gen_toks``; exactly one metric.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..io.files import resource_dir

TASKS_DIR_ENV = "MERGE_BENCH_TASKS_DIR"
VALIDATION_TAG = "merge_bench_validation"  # evaluation.validation.TAG
VALIDATION_SUFFIX = "_val"
REFERENCE_TAG = "merge_bench_reference"  # evaluation.reference.TAG: the STAR reference protocol's variants
REFERENCE_SUFFIX = "_ref"
# Suites evaluated with plain-text prompts; every other suite goes through the chat template.
PLAIN_TEXT_SUITES = frozenset({"flan"})


@dataclass(frozen=True)
class TaskInfo:
    """One task as its YAML declares it."""

    name: str
    suite: str
    short: str
    dataset: str
    config: str | None
    split: str
    holdout: str | None  # e.g. "10% holdout, seed 42": the test rows are a seeded holdout of ``split``
    revision: str | None  # a pinned hub revision of the dataset, if the YAML names one
    sample: str  # the sampling spec: "all", "rand 200", "bal 400", "bal all"
    metric: str
    max_new_tokens: int
    version: str
    has_adapter: bool
    labels: tuple[str, ...]  # canonical labels; empty for scored-by-number/F1/contains tasks
    per_item_labels: bool  # labels come from each document (ReCoRD's entities)
    chat_template: bool
    yaml_path: Path
    validation_of: str | None = None  # a validation variant: the test task it tunes for
    embedded: str | None = None  # the data ships in tasks/<embedded>/data (dataset_kwargs.embedded)


def tasks_dir() -> Path:
    """The shipped ``tasks/`` folder (``io.files.resource_dir``), or ``$MERGE_BENCH_TASKS_DIR``."""
    override = os.environ.get(TASKS_DIR_ENV)
    if not override:
        return resource_dir("tasks")
    if not Path(override).is_dir():
        raise FileNotFoundError(f"task folder {override} not found ({TASKS_DIR_ENV}); set it to a tasks/ folder")
    return Path(override)


def task_manager(extra_dirs: Sequence[Path] = ()):
    """lm-eval's TaskManager over our task folder (plus ``extra_dirs``), without lm-eval's built-in tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(tasks_dir()), *map(str, extra_dirs)], include_defaults=False)


def _info(name: str, cfg: dict[str, Any], yaml_path: Path) -> TaskInfo:
    meta = cfg.get("metadata") or {}
    kwargs = cfg.get("dataset_kwargs") or {}
    where = f"task {name} ({yaml_path})"
    for key in ("path", "split", "gold_field"):
        if key not in kwargs:
            raise ValueError(f"{where}: dataset_kwargs has no {key!r}")
    if "version" not in meta:
        raise ValueError(f"{where}: metadata has no 'version'")
    metrics = cfg.get("metric_list") or []
    if len(metrics) != 1:
        raise ValueError(f"{where}: expected exactly one metric in metric_list, got {len(metrics)}")
    suite = str(meta.get("suite") or name.split("_", 1)[0])
    short = str(meta.get("short") or name.split("_", 1)[-1])
    validation_of = f"{suite}_{short}" if _is_validation(cfg) else None
    suffix = VALIDATION_SUFFIX if validation_of else REFERENCE_SUFFIX if _has_tag(cfg, REFERENCE_TAG) else ""
    expected = f"{suite}_{short}{suffix}"
    if name != expected:
        raise ValueError(f"{where}: the name must be <suite>_<short>{suffix} = {expected}")
    labels = meta.get("labels") or []
    holdout = kwargs.get("holdout")
    return TaskInfo(
        name=name, suite=suite, short=short, dataset=kwargs["path"], config=kwargs.get("name"),
        split=kwargs["split"], revision=kwargs.get("revision"),
        holdout=f"{float(holdout['test_size']):.0%} holdout, seed {holdout['seed']}" if holdout else None,
        sample=str(kwargs.get("sample", "all")), metric=str(metrics[0]["metric"]),
        max_new_tokens=int((cfg.get("generation_kwargs") or {}).get("max_gen_toks", 0)),
        version=str(meta["version"]), has_adapter=bool(meta.get("has_adapter", True)),
        labels=tuple(e if isinstance(e, str) else e[0] for e in labels),
        per_item_labels="labels_field" in kwargs, chat_template=suite not in PLAIN_TEXT_SUITES,
        yaml_path=Path(yaml_path), validation_of=validation_of, embedded=kwargs.get("embedded"),
    )


def _has_tag(cfg: dict[str, Any], tag: str) -> bool:
    tags = cfg.get("tag") or []
    return tag in ([tags] if isinstance(tags, str) else tags)


def _is_validation(cfg: dict[str, Any]) -> bool:
    return _has_tag(cfg, VALIDATION_TAG)


def list_tasks(suite: str | None = None, manager=None, *, validation: bool = False) -> list[TaskInfo]:
    """Every test task (of one suite, if given), sorted by name; ``validation``: their validation variants
    instead. Unknown suite: ValueError."""
    manager = manager or task_manager()
    infos = []
    for name, entry in manager.task_index.items():
        cfg = entry.cfg or {}
        if entry.yaml_path is None or not isinstance(cfg.get("task"), str) or "group" in cfg or "class" in cfg:
            continue
        if _is_validation(cfg) == validation and not _has_tag(cfg, REFERENCE_TAG):
            infos.append(_info(name, cfg, entry.yaml_path))
    known = sorted({i.suite for i in infos})
    if suite is not None and suite not in known:
        raise ValueError(f"unknown suite {suite!r}; the task folder {tasks_dir()} has suites {known}")
    return sorted((i for i in infos if suite is None or i.suite == suite), key=lambda i: i.name)


def get_task(name: str, manager=None) -> TaskInfo:
    tasks = {t.name: t for t in list_tasks(manager=manager)}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(tasks)}")
    return tasks[name]


def validation_task(name: str, manager=None) -> TaskInfo:
    """The validation variant of test task ``name``."""
    variants = {t.validation_of: t for t in list_tasks(manager=manager, validation=True)}
    if name not in variants:
        raise ValueError(f"task {name!r} has no validation variant ({name}{VALIDATION_SUFFIX}); regenerate them "
                         "with scripts/make_validation_tasks.py")
    return variants[name]


def suite_group(suite: str) -> str:
    """The lm-eval group that evaluates a suite's tasks with adapters."""
    return f"merge_bench_{suite}"
