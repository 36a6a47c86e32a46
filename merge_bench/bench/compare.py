"""``merge-bench compare A B``: the paired difference A − B of two run records or two leaderboard entries scored
on the same items, per row (method, pretrained, LoRA), draw and task, with bootstrap CIs; nothing is rerun.

Decisions where the issue was silent: a difference is in raw score points (0–100), not normalized, because the
two sides may have different LoRA rows (another backend, another machine) and a ratio to either would hide that.
The bootstrap resamples each task's items with one index vector per task shared by both sides, every row and
every draw holding the task (paired, as in ``stats``), B = 2000 with the protocol's seed; the CI is the 2.5–97.5 %
percentile interval. Rows are compared where both sides have them: the methods by key, the pretrained and
LoRA rows; when each side is one entry of a different method, its one method is compared with the other's.
Two sides are on the same items when every shared task lists the same sampled ids (``sample_ids_sha256``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats

Cell = tuple[str, str, str]  # (row, draw label, task)


@dataclass
class ItemSet:
    """One side: its per-item rows, each task's kind (mean or spearman) and sampled ids, and a label."""

    label: str
    items: dict[Cell, list] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(c[0] for c in self.items))

    def add(self, row: str, draw: str, task: str, items: list, kind: str, sample_ids_sha256: str) -> None:
        self.items[(row, draw, task)] = items
        self.kinds[task] = kind
        self.samples[task] = sample_ids_sha256


def _kind(metric: str) -> str:
    return "spearman" if metric == "spearman" else "mean"


def from_record(record: dict[str, Any], label: str) -> ItemSet:
    """A run record (``merge-bench run``; one task set) or a sweep record (every draw of every size)."""
    out = ItemSet(label)
    if record.get("record_version") == 2:
        for size, block in record["sets"].items():
            for d in block["draws"]:
                _add_record(out, d["record"], f"n{size}-d{d['index']}")
    elif record.get("record_version") == 1:
        _add_record(out, record, f"n{len(record['config']['tasks'])}")
    else:
        raise ValueError(f"{label}: not a run record (record_version 1 or 2) nor a leaderboard entry")
    return out


def _add_record(out: ItemSet, record: dict[str, Any], draw: str) -> None:
    items = record.get("per_item")
    if not items:
        raise ValueError(f"{out.label}: the record keeps no per-item scores (made before they were recorded)")
    for t, info in record["tasks"].items():
        kind, ids = _kind(info["metric"]), info["sample_ids_sha256"]
        out.add("pretrained", "", t, items["pretrained"][t], kind, ids)
        out.add("lora", "", t, items["lora"][t], kind, ids)
        for key in record["methods"]:
            out.add(key, draw, t, items["methods"][key][t], kind, ids)


def from_entry(loaded, label: str) -> ItemSet:
    """A validated leaderboard entry (``leaderboard.validate.Loaded``): its method's rows per draw and its
    folder's pretrained and LoRA rows."""
    e = loaded.entry
    out = ItemSet(label)
    info = e.provenance.tasks
    for t in e.tasks:
        out.add("pretrained", "", t, loaded.reference["pretrained"][t], _kind(info[t].metric), info[t].sample_ids_sha256)
        out.add("lora", "", t, loaded.reference["lora"][t], _kind(info[t].metric), info[t].sample_ids_sha256)
    for d, draw in zip(loaded.method["draws"], e.draw_set.draws):
        for t in draw.tasks:
            out.add(e.method.key, f"n{e.n_tasks}-d{draw.index}", t, d["tasks"][t], _kind(info[t].metric),
                    info[t].sample_ids_sha256)
    return out


@dataclass(frozen=True)
class Difference:
    row: str            # "A-row vs B-row" when the rows differ, else the row
    draw: str
    task: str
    a: float
    b: float
    delta: float
    ci95: tuple[float, float]
    p_delta_gt0: float


@dataclass(frozen=True)
class RowSummary:
    row: str
    cells: int
    mean_delta: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    B: int
    seed: int
    differences: list[Difference]
    rows: list[RowSummary]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return stats.rounded(asdict(self))


def _pairs(a: ItemSet, b: ItemSet) -> list[tuple[str, str]]:
    """(row of A, row of B) to compare."""
    methods_a = [r for r in a.rows if r not in ("pretrained", "lora")]
    methods_b = [r for r in b.rows if r not in ("pretrained", "lora")]
    refs = [(r, r) for r in ("pretrained", "lora") if r in a.rows and r in b.rows]
    if len(methods_a) == len(methods_b) == 1 and methods_a != methods_b:
        return [(methods_a[0], methods_b[0])] + refs
    common = [r for r in methods_a if r in methods_b]
    return [(r, r) for r in common] + refs


def compare(a: ItemSet, b: ItemSet, B: int = stats.DEFAULT_B, seed: int = stats.DEFAULT_SEED) -> Comparison:
    pairs = _pairs(a, b)
    shared = sorted(set(a.samples) & set(b.samples))
    if not shared:
        raise ValueError(f"{a.label} and {b.label} share no task: nothing to compare")
    differ = [t for t in shared if a.samples[t] != b.samples[t]]
    if differ:
        raise ValueError(f"{a.label} and {b.label} scored other items on {differ} (their sample_ids_sha256 "
                         "differ): a paired comparison needs the same items")
    rng = np.random.default_rng(seed)
    cells: list[tuple[str, str, str, str, str]] = []   # (label, row A, row B, draw, task)
    for ra, rb in pairs:
        for (row, draw, task) in a.items:
            if row == ra and task in shared and (rb, draw, task) in b.items:
                cells.append((ra if ra == rb else f"{ra} vs {rb}", ra, rb, draw, task))
    if not cells:
        raise ValueError(f"{a.label} and {b.label} have no row, draw and task in common")
    index = {}
    for t in sorted({c[4] for c in cells}):
        n = len(a.items[next(c for c in a.items if c[2] == t)])
        index[t] = rng.integers(0, n, size=(B, n)) if B > 0 else np.arange(n)[None]
    diffs, reps = [], {}
    for label, ra, rb, draw, task in cells:
        xa, xb = a.items[(ra, draw, task)], b.items[(rb, draw, task)]
        if len(xa) != len(xb):
            raise ValueError(f"{task}: {len(xa)} items in {a.label}, {len(xb)} in {b.label}")
        point = stats.task_scores(task, a.kinds[task], [xa, xb], np.arange(len(xa))[None])[0]
        rep = stats.task_scores(task, a.kinds[task], [xa, xb], index[task])
        d = rep[:, 0] - rep[:, 1]
        lo, hi = np.percentile(d, [2.5, 97.5])
        diffs.append(Difference(label, draw, task, float(point[0]), float(point[1]), float(point[0] - point[1]),
                                (float(lo), float(hi)), float(np.mean(d > 0))))
        reps.setdefault(label, []).append(d)
    rows = []
    for label, ds in reps.items():
        mine = [x for x in diffs if x.row == label]
        mean = np.mean(ds, axis=0)
        lo, hi = np.percentile(mean, [2.5, 97.5])
        rows.append(RowSummary(label, len(mine), float(np.mean([x.delta for x in mine])), (float(lo), float(hi))))
    return Comparison(a.label, b.label, B, seed, diffs, rows)


def render(c: Comparison) -> str:
    from tabulate import tabulate

    head = [f"A = {c.a}", f"B = {c.b}",
            f"paired Δ = A − B in score points, 95 % CI from {c.B} bootstrap replicates of the items (seed {c.seed})"]
    body = [[d.row, d.draw or "-", d.task, f"{d.a:.2f}", f"{d.b:.2f}", f"{d.delta:+.2f}",
             f"[{d.ci95[0]:+.2f}, {d.ci95[1]:+.2f}]", f"{d.p_delta_gt0:.2f}"] for d in c.differences]
    table = tabulate(body, headers=["row", "draw", "task", "A", "B", "Δ", "Δ 95 % CI", "P(Δ>0)"],
                     disable_numparse=True, colalign=("left", "left", "left") + ("right",) * 5)
    summary = tabulate([[r.row, str(r.cells), f"{r.mean_delta:+.2f}", f"[{r.ci95[0]:+.2f}, {r.ci95[1]:+.2f}]"]
                        for r in c.rows], headers=["row", "tasks", "mean Δ", "95 % CI"], disable_numparse=True,
                       colalign=("left", "right", "right", "right"))
    return "\n".join(head) + "\n\n" + table + "\n\nMean over each row's draws and tasks:\n" + summary
