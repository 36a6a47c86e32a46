"""Run record (``merge-bench run``) → leaderboard entries, one per method of the run."""
from __future__ import annotations

import math
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

from ..io.files import sha256_file
from ..merging.methods import BUILTIN, load_method_file
from ..bench.scores import normalized as normalized_score
from .schema import Entry, TaskInfo, seal
from .store import task_set_id

# Scores are recomputed and compared with what the record says at this tolerance (0–100 scale).
NORMALIZED_TOLERANCE = 1e-6


def _get(record: Mapping[str, Any], *keys: str, where: str = "run record") -> Any:
    node: Any = record
    for i, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"{where}: missing key {'.'.join(keys[: i + 1])!r}")
        node = node[key]
    return node


def plugin_file_info(spec: str) -> tuple[str, dict[str, Any]]:
    """(method name, MethodInfo fields) for a ``path/file.py:Class`` plugin, pinned by sha256."""
    cls = load_method_file(spec)
    path = Path(spec.rpartition(":")[0])
    return cls.name, {"source": "file", "plugin_spec": spec, "plugin_sha256": sha256_file(path)}


def method_source(name: str, item: Mapping[str, Any], plugins: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if name in plugins:
        return dict(plugins[name])
    plugin = item.get("plugin")
    if isinstance(plugin, Mapping):
        return {"source": "file", "plugin_spec": plugin.get("spec"), "plugin_sha256": plugin.get("file_sha256")}
    spec = item.get("spec")
    if isinstance(spec, str) and ".py:" in spec:
        path = Path(spec.rpartition(":")[0])
        if not path.is_file():
            raise ValueError(f"run record: method {name!r} came from {spec!r}, "
                             f"but {path} is not there to pin its sha256")
        return {"source": "file", "plugin_spec": spec, "plugin_sha256": sha256_file(path)}
    if name in {cls.name for cls in BUILTIN}:
        return {"source": "builtin"}
    for ep in entry_points(group="merge_bench.methods"):
        cls = ep.load()
        if getattr(cls, "name", None) == name:
            dist = ep.dist
            return {
                "source": "entry_point",
                "distribution": dist.name if dist else ep.value,
                "distribution_version": dist.version if dist else None,
            }
    raise ValueError(
        f"run record: method {name!r} is neither built in nor an installed entry point, and no plugin "
        "file was given for it (record it with plugins={name: plugin_file_info('file.py:Class')[1]})"
    )


def _check_normalized(where: str, stated: Any, scores: Mapping[str, float], lora: Mapping[str, float]) -> float:
    computed = normalized_score(scores, lora)
    close = isinstance(stated, (int, float)) and math.isclose(stated, computed, rel_tol=0, abs_tol=NORMALIZED_TOLERANCE)
    if not close:
        raise ValueError(f"run record: {where} is {stated!r} but the per-task scores give {computed!r}")
    return float(stated)


def _same_tasks(where: str, keys: Any, tasks: list[str]) -> None:
    if not isinstance(keys, Mapping) or sorted(keys) != tasks:
        got = sorted(keys) if isinstance(keys, Mapping) else keys
        raise ValueError(f"run record: {where} has tasks {got}, expected the run's task set {tasks}")


def provenance_fields(record: Mapping[str, Any], tasks: list[str], adapters: Mapping[str, Any],
                      task_info: Mapping[str, Any]) -> dict[str, Any]:
    """An entry's ``provenance`` (without ``merged_sha256``) from a run or sweep record."""
    missing = [t for t in tasks if t not in adapters or t not in task_info]
    if missing:
        raise ValueError(f"run record: no adapters/tasks provenance for task(s) {missing}")
    backbone = _get(record, "backbone")
    return {
        "merge_bench": {k: _get(record, "merge_bench", k) for k in ("version", "git_commit")},
        "versions": dict(_get(record, "versions")),
        "hardware": dict(_get(record, "hardware")),
        "backbone": {k: _get(backbone, k, where="run record backbone")
                     for k in ("name", "base_id", "base_revision", "base_sha256")},
        "adapters": {t: dict(adapters[t]) for t in tasks},
        "tasks": {t: {k: v for k, v in task_info[t].items() if k in TaskInfo.model_fields} for t in tasks},
        "backend": _get(record, "config", "backend"),
        "device": _get(record, "config", "device"),
        "seed": _get(record, "config", "seed"),
        "batch_size": _get(record, "config").get("batch_size"),
        "date": _get(record, "created"),
    }


def entries_from_record(
    record: Mapping[str, Any], plugins: Mapping[str, dict[str, Any]] | None = None
) -> list[Entry]:
    """One sealed Entry per method in the record, in the record's method order.

    ``plugins`` maps a method name to its MethodInfo source fields (see ``plugin_file_info``) for
    methods loaded from a file. A record made with ``--limit`` is refused: it evaluated a subset,
    so its numbers are not the protocol's.
    """
    plugins = plugins or {}
    if _get(record, "record_version") != 1:
        raise ValueError(f"run record: record_version {record['record_version']!r} is not supported (expected 1)")
    limit = _get(record, "config").get("limit")
    if limit is not None:
        raise ValueError(f"run record: made with limit={limit}; only full runs (no --limit) can be leaderboard entries")
    pretrained = _get(record, "pretrained", "scores")
    lora = _get(record, "lora", "scores")
    tasks = sorted(pretrained)
    if not tasks:
        raise ValueError("run record: pretrained.scores is empty")
    config_tasks = _get(record, "config").get("tasks")
    if config_tasks is not None and sorted(config_tasks) != tasks:
        raise ValueError(f"run record: config.tasks {sorted(config_tasks)} differ from the scored tasks {tasks}")
    _same_tasks("lora.scores", lora, tasks)
    pre_norm = _check_normalized("pretrained.normalized", _get(record, "pretrained", "normalized"), pretrained, lora)
    provenance_base = provenance_fields(record, tasks, _get(record, "adapters"), _get(record, "tasks"))
    backbone = _get(record, "backbone")
    shared = {
        "backbone": _get(backbone, "name", where="run record backbone"),
        "task_set": {"id": task_set_id(tasks), "tasks": tasks},
        "pretrained": {"scores": dict(pretrained), "normalized": pre_norm},
        "lora": {"scores": dict(lora), "normalized": normalized_score(lora, lora)},
    }
    entries = []
    methods = _get(record, "methods")
    if not methods:
        raise ValueError("run record: no methods were run")
    for key, item in methods.items():
        where = f"methods[{key!r}]"
        name = _get(item, "method", where=f"run record {where}")
        scores = _get(item, "scores", where=f"run record {where}")
        _same_tasks(f"{where}.scores", scores, tasks)
        stated = _get(item, "normalized", where=f"run record {where}")
        norm = _check_normalized(f"{where}.normalized", stated, scores, lora)
        fields = {
            **shared,
            "method": {"name": name, "key": key, "params": dict(_get(item, "params", where=f"run record {where}")),
                       **method_source(name, item, plugins)},
            "scores": dict(scores),
            "normalized": norm,
            "provenance": {**provenance_base, "merged_sha256": item.get("merged_sha256")},
        }
        try:
            entries.append(seal(fields))
        except ValueError as err:
            raise ValueError(f"run record: {where} does not make a valid leaderboard entry: {err}") from None
    return entries
