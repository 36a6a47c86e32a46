"""``merge-bench check`` for protocol-v2 entries: rerun their sweep and compare every number and every item.

The draws are drawn again from the entry's seed (and must come out the same), every draw is rerun into a
fresh result cache, and then: each method's per-draw task scores and normalized scores, its mean over the
draws, and the pretrained and LoRA rows are compared at the tolerance (score points), as for v1; and the
per-item files are verified: a rerun whose items hash as the entry pins is an exact reproduction; otherwise
the items that changed are counted per (row, draw, task), and more changed items than the tolerance allows
(in points of that task, e.g. 0.5 points = 1 item of 200) is a difference, even where flips cancel in the score.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from .check import CheckReport, Difference, Runner, key_overrides
from .sweeps import Loaded, check_entry_v2, entries_from_sweep
from .tables import LORA_LABEL, PRETRAINED_LABEL


def is_v2_entry(path: Path) -> bool:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("schema_version") == 2


def _root_of(path: Path) -> Path:
    """The leaderboard root of ``<root>/v2/<backbone>/<track>/<set>/<entry>.json``."""
    return Path(path).resolve().parents[4]


def _load(paths: list[Path]) -> dict[Path, list[Loaded]]:
    folders: dict[Path, list[Loaded]] = defaultdict(list)
    problems = []
    for path in paths:
        item, found = check_entry_v2(Path(path), _root_of(path))
        problems += found
        if item is not None:
            folders[item.path.parent].append(item)
    if problems:
        raise ValueError("the baseline entries are not valid:\n  " + "\n  ".join(map(str, problems)))
    return folders


def _changed(a: list, b: list) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def run_check_v2(paths: list[Path], *, tolerance: float, runner: Runner | None = None, device: str | None = None,
                 out: Path | None = None, batch_size: int | None = None) -> CheckReport:
    from ..bench.run import RunConfig

    if runner is None:
        from ..bench.sweep import run_sweep as runner  # noqa: N813
    folders = _load(paths)
    report = CheckReport([], 0, [], tolerance)
    with tempfile.TemporaryDirectory(prefix="merge-bench-check-") as fresh:
        for members in folders.values():
            e0 = members[0].entry
            label = f"{e0.backbone} · {e0.track} · {e0.draw_set.id}"
            report.snapshots.append(label)
            p = e0.provenance
            cfg: dict[str, Any] = dict(
                backbone=e0.backbone, sizes=[e0.n_tasks], draws=e0.draw_set.requested, seed=e0.draw_set.seed,
                methods=[m.entry.method.plugin_spec if m.entry.method.source == "file" else m.entry.method.name
                         for m in members],
                params={m.entry.method.name: key_overrides(m.entry.method.key, m.entry.method.params) for m in members},
                backend=p.backend, device=device or p.device, limit=None, batch_size=batch_size or p.batch_size,
                cache_dir=Path(fresh), track=e0.track)
            if out is not None:
                cfg["out"] = Path(out)
            record = runner(RunConfig(**cfg))
            _compare(report, label, members, record, tolerance)
            for name in sorted(set(p.versions.model_dump()) | set(record["versions"])):
                was, now = p.versions.model_dump().get(name), record["versions"].get(name)
                if was != now:
                    report.notes.append(f"{label}: {name} {was} in the baseline, {now} now")
    return report


def _compare(report: CheckReport, label: str, members: list[Loaded], record: dict, tolerance: float) -> None:
    block = record["sets"][str(members[0].entry.n_tasks)]
    drawn = [d["tasks"] for d in block["draws"]]
    if drawn != [d.tasks for d in members[0].entry.draw_set.draws]:
        raise ValueError(f"{label}: the rerun drew other task sets {drawn} than the entry "
                         f"{[d.tasks for d in members[0].entry.draw_set.draws]}: the draw code changed")
    fresh = {n.entry.method.key: n for n in entries_from_sweep(record)}

    def cmp(row: str, field: str, base: float, now: float | None) -> None:
        report.compared += 1
        if now is None or abs(now - base) > tolerance:
            report.differences.append(Difference(label, row, field, base, now))

    ref, ref_now = members[0], json.loads(next(iter(fresh.values())).reference_items)
    for row, name in (("pretrained", PRETRAINED_LABEL), ("lora", LORA_LABEL)):
        for t, score in getattr(ref.entry, row).scores.items():
            now = next((d["record"][row]["scores"][t] for d in block["draws"] if t in d["record"][row]["scores"]), None)
            cmp(name, t, score, now)
            _items(report, label, name, t, ref.reference[row][t], ref_now[row].get(t), tolerance)
    pinned = [(m.entry.items.method.sha256, fresh[m.entry.method.key].entry.items.method.sha256)
              for m in members if m.entry.method.key in fresh]
    pinned.append((ref.entry.items.reference.sha256, next(iter(fresh.values())).entry.items.reference.sha256))
    same = sum(a == b for a, b in pinned)
    report.notes.append(f"{label}: {same} of {len(pinned)} per-item files hash as pinned"
                        + (" (an exact reproduction)" if same == len(pinned) else ""))
    for m in members:
        key, e = m.entry.method.key, m.entry
        new = fresh.get(key)
        cmp(key, "normalized (mean over draws)", e.result.normalized, new.entry.result.normalized if new else None)
        for t, t_now in zip(e.tuning or [], (new.entry.tuning or []) if new else []):
            cmp(key, f"d{t.index} validation score of the choice", t.validation_score, t_now.validation_score)
            if t.chosen != t_now.chosen:
                report.notes.append(f"{label}: {key} d{t.index} chose {t_now.chosen}, the entry {t.chosen}")
        items_now = json.loads(new.method_items)["draws"] if new else None
        for d, row in enumerate(e.per_draw):
            got = new.entry.per_draw[d] if new else None
            cmp(key, f"d{row.index} normalized", row.normalized, got.normalized if got else None)
            for t, score in row.scores.items():
                cmp(key, f"d{row.index} {t}", score, got.scores.get(t) if got else None)
                _items(report, label, key, f"d{row.index} {t}", m.method["draws"][d]["tasks"][t],
                       items_now[d]["tasks"].get(t) if items_now else None, tolerance)


def _items(report: CheckReport, label: str, row: str, field: str, base: list, now: list | None,
           tolerance: float) -> None:
    """Items that changed, in points of the task (100 / n per item); beyond the tolerance is a difference."""
    report.compared += 1
    if now is None:
        report.differences.append(Difference(label, row, f"{field} items changed (points)", 0.0, None))
        return
    moved = 100.0 * _changed(base, now) / max(len(base), 1)
    if moved > tolerance:
        report.differences.append(Difference(label, row, f"{field} items changed (points)", 0.0, moved))
