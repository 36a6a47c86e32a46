"""Sweep record (``merge-bench run --n-tasks … --draws …``) → leaderboard entries, one per (size, method)."""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

from ..io.files import sha256_file
from ..merging.methods import BUILTIN, load_method_file
from ..bench import stats
from ..bench.report import stats_draw
from .schema import TaskInfo, seal
from .store import REFERENCE_ITEMS, NewEntry, draw_set_id, method_items_path


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


def _dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _aggregate(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"normalized": row["normalized"], "ci95": row["normalized_ci95"], "draw_sd": row["draw_sd"],
            "per_draw": row["per_draw"], "retained": row["retained"], "retained_ci95": row["retained_ci95"],
            "retained_per_draw": row["retained_per_draw"]}


def entries_from_sweep(record: Mapping[str, Any],
                       plugins: Mapping[str, dict[str, Any]] | None = None) -> list[NewEntry]:
    """One entry per (size, method) of a sweep record (``run --n-tasks … --draws …``), on the record's track.
    A tuned entry's ``method.params`` are the search's start (the defaults and the user's values); what each
    draw chose is in ``tuning``."""
    if _get(record, "record_version") != 2:
        raise ValueError("run record: not a sweep record (record_version 2); run with --n-tasks N1,N2 --draws D")
    config = _get(record, "config")
    track = config.get("track", "default")
    if config.get("limit") is not None:
        raise ValueError(f"run record: made with limit={config['limit']}; only full runs can be leaderboard entries")
    out = []
    for size, block in _get(record, "sets").items():
        note = block["normalization"]["note"]
        if note or block["stats"] is None:
            raise ValueError(f"N = {size}: the sweep is not a valid leaderboard entry: {note}. Nothing was written")
        recs = [d["record"] for d in block["draws"]]
        tasks = sorted({t for r in recs for t in r["config"]["tasks"]})
        pre_items, lora_items, pre_scores, lora_scores, adapters, infos = {}, {}, {}, {}, {}, {}
        for r in recs:
            for t in r["config"]["tasks"]:
                pre_items[t], lora_items[t] = r["per_item"]["pretrained"][t], r["per_item"]["lora"][t]
                pre_scores[t], lora_scores[t] = r["pretrained"]["scores"][t], r["lora"]["scores"][t]
                adapters[t], infos[t] = r["adapters"][t], r["tasks"][t]
        reference_text = _dump({"pretrained": pre_items, "lora": lora_items})
        st = block["stats"]
        if "retained_excluded" not in st:  # a record made before the retained gain: the same bootstrap again
            st = stats.bootstrap([stats_draw(r) for r in recs], B=st["B"]).to_dict()
        provenance = provenance_fields(record, tasks, adapters, infos)
        n = int(size)
        draws = [{"index": d["index"], "tasks": d["tasks"]} for d in block["draws"]]
        draw_set = {"id": draw_set_id(n, [d["tasks"] for d in draws]), "seed": config["seed"],
                    "requested": config["draws"], "draws": draws}
        for key, item in recs[0]["methods"].items():
            name = item["method"]
            tuning = [{"index": d["index"], **r["tuning"][key]} for d, r in zip(draws, recs)] \
                if track == "tuned" else None
            start = tuning[0]["path"][0]["params"] if tuning else item["params"]
            params = {k: v for k, v in start.items() if k != "seed"}
            rows = [r["methods"][key] for r in recs]
            items_text = _dump({"method": key, "draws": [{"index": d["index"], "tasks": r["per_item"]["methods"][key]}
                                                         for d, r in zip(draws, recs)]})
            fields = {
                "backbone": _get(record, "backbone", "name"), "track": track, "n_tasks": n, "draw_set": draw_set,
                "method": {"name": name, "key": key, "params": params, **method_source(name, item, plugins or {})},
                "per_draw": [{"index": d["index"], "scores": row["scores"], "normalized": row["normalized"],
                              "merged_sha256": row.get("merged_sha256")} for d, row in zip(draws, rows)],
                "result": _aggregate(st["methods"][key]),
                "pretrained": {"scores": pre_scores, "result": _aggregate(st["pretrained"])},
                "lora": {"scores": lora_scores},
                "retained_excluded": st["retained_excluded"],
                "items": {"reference": {"path": REFERENCE_ITEMS, "sha256": sha256_text(reference_text)},
                          "method": {"path": method_items_path(key), "sha256": sha256_text(items_text)}},
                "bootstrap": {"B": st["B"], "seed": stats.DEFAULT_SEED},
                "provenance": provenance,
            }
            uses = item.get("data", "none")   # calibration data (RegMean's Grams), or none
            fields["data"] = uses
            fields["protocol"] = config.get("protocol", "default")  # --protocol of the run
            if tuning is not None:
                fields["tuning"] = tuning
                fields["data"] = "validation" if uses == "none" else f"validation+{uses}"
            try:
                out.append(NewEntry(seal(fields), items_text, reference_text))
            except ValueError as err:
                raise ValueError(f"run record: N = {size}, method {key!r} does not make a valid entry: {err}") from None
    return out
