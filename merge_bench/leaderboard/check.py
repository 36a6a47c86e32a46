"""``merge-bench check``: rerun entries' sweeps and compare every number and every item with them.

The draws are drawn again from the entry's seed (and must come out the same), every draw is rerun into a
fresh result cache, and then: each method's per-draw task scores and normalized scores, its mean over the
draws, and the pretrained and LoRA rows are compared at the tolerance (score points); and the per-item files
are verified: a rerun whose items hash as the entry pins is an exact reproduction; otherwise the items that
changed are counted per (row, draw, task), and more changed items than the tolerance allows (in points of
that task, e.g. 0.5 points = 1 item of 200) is a difference, even where flips cancel in the score.
A baseline is entry files or leaderboard folders (every entry under them); a runner (default
``bench.sweep.run_sweep``; tests inject their own) reruns each folder's methods in one sweep.
"""
from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from tabulate import tabulate

from .convert import entries_from_sweep
from .store import LEADERBOARD_VERSION, default_root
from .validate import Loaded, check_entry

PRETRAINED_LABEL = "Pretrained"
LORA_LABEL = "LoRA (individual)"

# Score points (0–100 scale) a rerun may move before check fails. Measured on the embedded backbone
# (2-core AMD EPYC, AVX2): an identical rerun, and a rerun on one thread with MKL and oneDNN forced to
# their SSE4 kernels and ATen to its default (non-AVX) kernels, a stand-in for another CPU, both repeated
# all 14 numbers of the CI snapshot exactly (±0). Greedy answers near a tie can still flip on other
# hardware (a GPU, AVX-512), so the default allows one item of a 200-item task: 0.5 points. A regression
# that matters moves more than one answer.
DEFAULT_TOLERANCE = 0.5

Runner = Callable[[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class Difference:
    snapshot: str
    row: str
    field: str
    baseline: float | None
    now: float | None

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.now is None else self.now - self.baseline


@dataclass
class CheckReport:
    differences: list[Difference]
    compared: int
    snapshots: list[str]
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> str:
        if self.ok:
            lines = [f"check: OK: {self.compared} numbers on {len(self.snapshots)} run(s) "
                     f"({', '.join(self.snapshots)}) within ±{self.tolerance:g} of the baseline"]
        else:
            def num(x: float | None) -> str:
                return "missing" if x is None else f"{x:.4f}"
            rows = [[d.snapshot, d.row, d.field, num(d.baseline), num(d.now),
                     "-" if d.delta is None else f"{d.delta:+.4f}"] for d in self.differences]
            lines = [f"check: FAILED: {len(self.differences)} of {self.compared} numbers moved beyond "
                     f"±{self.tolerance:g} from the baseline", "",
                     tabulate(rows, headers=["run", "method", "task", "baseline", "now", "Δ"], disable_numparse=True)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def key_overrides(key: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a method key names (``star[eta=20]`` → ``{"eta": 20}``), with their recorded values.

    The run names a result after the parameters it was given, so passing exactly these again
    reproduces the key; passing every parameter would give another key for the same maths.
    """
    _, bracket, rest = key.partition("[")
    if not bracket:
        return {}
    names = re.findall(r"(?:^|,)([A-Za-z_][A-Za-z0-9_]*)=", rest.removesuffix("]"))
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"method key {key!r} names parameter(s) {missing} that its params {sorted(params)} lack")
    return {n: params[n] for n in names}


def _root_of(path: Path) -> Path:
    """The leaderboard root of ``<root>/v2/<backbone>/<track>/<set>/<entry>.json``."""
    return Path(path).resolve().parents[4]


def _load(paths: list[Path]) -> dict[Path, list[Loaded]]:
    folders: dict[Path, list[Loaded]] = defaultdict(list)
    problems = []
    for path in paths:
        item, found = check_entry(Path(path), _root_of(path))
        problems += found
        if item is not None:
            folders[item.path.parent].append(item)
    if problems:
        raise ValueError("the baseline entries are not valid:\n  " + "\n  ".join(map(str, problems)))
    return folders


def _changed(a: list, b: list) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def baseline_files(paths: Iterable[Path] | None, backbone: str | None = None) -> list[Path]:
    """Entry files from files and folders (every entry under a folder; default: the repository's board), only
    ``backbone``'s when given."""
    out: list[Path] = []
    for path in map(Path, paths or [default_root() / LEADERBOARD_VERSION]):
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.json") if "items" not in p.relative_to(path).parts[:-1]
                          and p.name != "entry.schema.json")
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"baseline {path} does not exist (expected leaderboard entry files or folders)")
    if backbone is not None:
        out = [p for p in out if json.loads(p.read_text(encoding="utf-8")).get("backbone") == backbone]
    if not out:
        raise ValueError(f"nothing to check: no leaderboard entries under {[str(p) for p in paths or []]}"
                         + (f" for backbone {backbone}" if backbone else ""))
    return out


def run_check(paths: list[Path], *, tolerance: float = DEFAULT_TOLERANCE, runner: Runner | None = None,
              device: str | None = None, out: Path | None = None, batch_size: int | None = None) -> CheckReport:
    """Rerun each folder's entries among ``paths`` (one sweep per folder) and compare."""
    from ..bench.run import RunConfig

    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
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
