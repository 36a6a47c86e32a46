"""Groups of entries with their statistics: one group per folder (backbone, track, N, draw set), the bootstrap
rerun over all its methods from the per-item files. Everything that compares methods (Δ to simple_avg, ranks,
tie groups, Holm-adjusted claims) depends on which entries the folder holds, so it is never stored in an entry:
it is recomputed here for ``show``, the README, the page and ``compare``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..bench import stats
from .schema import Entry
from .validate import Loaded, by_folder, draws_of

@dataclass(frozen=True)
class Group:
    backbone: str
    track: str
    n_tasks: int
    draw_set: Any                       # schema.DrawSet
    entries: list[Entry]              # sorted by method key
    stats: dict[str, Any]               # stats.bootstrap(...).to_dict() over the folder's methods
    # where some methods use data (calibration, validation): the tie group among the data-free ones alone
    data_free_tie_group: list[str] | None = None

    @property
    def title(self) -> str:
        return f"{self.backbone} · {self.track} · N = {self.n_tasks} ({len(self.draw_set.draws)} draw(s))"


def group_stats(loaded: list[Loaded], backbone: str | None = None) -> list[Group]:
    """One group per folder, sorted by backbone, track and N; the bootstrap rerun over all its methods."""
    groups = []
    for members in by_folder(loaded).values():
        e = members[0].entry
        if backbone is not None and e.backbone != backbone:
            continue
        result = stats.bootstrap(draws_of(members), B=e.bootstrap.B, seed=e.bootstrap.seed).to_dict()
        free = [m for m in members if m.entry.data == "none"]
        free_ties = None
        if len(free) not in (0, len(members)):
            free_ties = stats.bootstrap(draws_of(free), B=e.bootstrap.B, seed=e.bootstrap.seed).to_dict()["tie_group"]
        groups.append(Group(e.backbone, e.track, e.n_tasks, e.draw_set, [m.entry for m in members], result,
                              free_ties))
    return sorted(groups, key=lambda g: (g.backbone, g.track, g.n_tasks, g.draw_set.id))


def per_task(g: Group, row: str) -> list[dict[str, Any]]:
    """One row's task scores (``row``: a method key, "pretrained" or "lora"), draw by draw in draw order, each
    with its Wilson 95 % interval (None for a task whose items are not 0/1: token F1, Spearman)."""
    several = len(g.draw_set.draws) > 1
    out = []
    for d, draw in enumerate(g.draw_set.draws):
        for t in draw.tasks:
            task = g.stats["tasks"][f"{t}@{d}" if several else t]
            out.append({"draw": draw.index, "task": t, "score": task["scores"][row],
                        "wilson95": task["wilson95"][row] if task["wilson95"] else None})
    return out


def _row(g: Group, kind: str, key: str, s: dict[str, Any] | None) -> dict[str, Any]:
    """The fields every ``show --json`` row has; ``s`` is the row's statistics (None for the LoRA row, which is
    100 by definition on both scores)."""
    lora = s is None
    defined = g.stats["pretrained"]["retained"] is not None
    return {"backbone": g.backbone, "track": g.track, "n_tasks": g.n_tasks,
            "draws": [d.tasks for d in g.draw_set.draws], "draw_set": g.draw_set.id, "kind": kind, "method": key,
            "normalized": 100.0 if lora else s["normalized"], "ci95": None if lora else s["normalized_ci95"],
            "per_draw": None if lora else s["per_draw"], "draw_sd": None if lora else s["draw_sd"],
            "retained": (100.0 if defined else None) if lora else s["retained"], "retained_ci95": None if lora else s["retained_ci95"],
            "retained_per_draw": None if lora else s["retained_per_draw"],
            "retained_excluded": g.stats["retained_excluded"], "per_task": per_task(g, key if kind == "method" else kind)}


def show_rows(groups: list[Group]) -> list[dict[str, Any]]:
    """``leaderboard show --json``: per (backbone, track, N) the methods best first, then the pretrained and LoRA
    reference rows (``kind``), each with per-task scores and Wilson intervals, the normalized score and the
    retained gain with their bootstrap CIs."""
    rows = []
    for g in groups:
        for e in sorted(g.entries, key=lambda x: -g.stats["methods"][x.method.key]["normalized"]):
            s = g.stats["methods"][e.method.key]
            rows.append({**_row(g, "method", e.method.key, s), "name": e.method.name, "params": e.method.params,
                         "data": e.data, "rank": s["rank"], "rank_ci95": s["rank_ci95"],
                         "tied_with_leader": s["tied_with_leader"], "delta_vs_simple_avg": s["delta"],
                         "delta_ci95": s["delta_ci95"], "p_delta_gt0": s["p_delta_gt0"], "tuning": _tuning_row(e)})
        rows.append(_row(g, "pretrained", "pretrained", g.stats["pretrained"]))
        rows.append(_row(g, "lora", "lora", None))
    return rows


def _tuning_row(e: Entry) -> dict[str, Any] | None:
    """The tuned track's search in ``show --json``: per draw (in draw order) its evaluations, choice and path."""
    if e.tuning is None:
        return None
    return {"evaluations": [t.evaluations for t in e.tuning], "chosen": [t.chosen for t in e.tuning],
            "path": [[step.model_dump() for step in t.path] for t in e.tuning]}


def finding(g: Group, a: str = "star", b: str = "simple_avg") -> str:
    """One sentence: does ``a`` beat ``b`` at this N (paired Δ, its CI, the Holm-adjusted p over every pair of the
    folder: "beats" or "loses to" only when that p is at most alpha), and who is tied for first."""
    m = g.stats["methods"]
    tie = ", ".join(g.stats["tie_group"])
    if a not in m or b not in m:
        return f"N = {g.n_tasks}: tied for first: {tie}."
    pair = next((p for p in g.stats["pairs"] if {p["a"], p["b"]} == {a, b}), None)
    d, (lo, hi) = m[a]["delta"], m[a]["delta_ci95"]
    if pair is None or pair["significant"]:
        verdict = "beats" if d > 0 and lo > 0 else "loses to" if d < 0 and hi < 0 else "is not distinguishable from"
    else:
        verdict = "is not distinguishable (after Holm's correction over every pair) from"
    holm = f", Holm-adjusted p = {pair['p_holm']:.3g}" if pair else ""
    free = (f" Among the data-free methods, tied for first: {', '.join(g.data_free_tie_group)}."
            if g.data_free_tie_group else "")
    return (f"N = {g.n_tasks} ({len(g.draw_set.draws)} draw(s)): {a} {verdict} {b}: Δ = {d:+.2f} points "
            f"[95 % CI {lo:+.2f}, {hi:+.2f}], P(Δ > 0) = {m[a]['p_delta_gt0']:.2f}{holm}. Tied for first: {tie}.{free}")
