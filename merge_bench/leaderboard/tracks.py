"""The two tracks side by side: for every (backbone, N, draw set) with entries on both the
default and the tuned track, each method present on both with its two rows and the paired difference
tuned − default, its 95 % CI and P(Δ > 0).

Decisions:
- Paired means the same resampling indices for both rows: one plan (``stats.make_plan`` over the shared draws,
  with the entries' B and seed) serves every method's bootstrap, whose methods are keyed ``<key>@default`` and
  ``<key>@tuned``. The plan depends on the draws and their tasks only, never on the methods, so these are also
  the indices behind each track's own table: the Δ and the two rows' intervals come from the same replicates.
- The two folders must hold the same experiment but for the track (draws, reference rows, base, adapters,
  sampled items, bootstrap settings); otherwise a Δ would mix two stacks, so it is a ValueError naming both.
- Ranks, leaders and tie groups are each track's own (its folder's group statistics, as in its table), so a
  method missing from one track still counts in the other's ranks; such methods are listed, not compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bench import stats
from .groups import Group
from .schema import Entry
from .validate import Loaded, draws_of, fingerprint

TRACKS = ("default", "tuned")


@dataclass(frozen=True)
class TrackRow:
    """One method on both tracks: its entries, each track's statistics row, and the paired tuned − default."""

    key: str
    default: Entry
    tuned: Entry
    default_stats: dict[str, Any]   # the method's row of the default folder's group statistics
    tuned_stats: dict[str, Any]
    delta: float
    delta_ci95: list[float]
    p_delta_gt0: float

    @property
    def rank_change(self) -> int:
        """Places gained when tuned (default rank − tuned rank): positive climbs, negative falls."""
        return self.default_stats["rank"] - self.tuned_stats["rank"]


@dataclass(frozen=True)
class TrackComparison:
    """One (backbone, N, draw set) on both tracks: the methods of both, each track's leader and ties."""

    backbone: str
    n_tasks: int
    draw_set: Any                       # schema.DrawSet, shared by both folders
    bootstrap: dict[str, int]           # {"B", "seed"} of both tracks' entries
    leader: dict[str, str]              # track -> that track's leader
    tie_group: dict[str, list[str]]     # track -> the methods tied with its leader
    # where some methods use calibration data (RegMean's Grams): each track's tie group among the others alone,
    # which the tuned track's validation search may reorder while a calibration method leads both
    calibration_free_tie_group: dict[str, list[str]] | None
    only_on: dict[str, list[str]]       # track -> methods with an entry on that track alone (not compared)
    rows: list[TrackRow]                # best tuned score first

    @property
    def title(self) -> str:
        return f"{self.backbone} · tuned − default · N = {self.n_tasks} ({len(self.draw_set.draws)} draw(s))"

    def vs_default(self) -> dict[tuple[str, int, str, str], dict[str, Any]]:
        """Each compared method's ``vs_default`` field of its tuned row in ``leaderboard show --json``, keyed
        (backbone, N, draw set id, method key)."""
        return {(self.backbone, self.n_tasks, self.draw_set.id, r.key): {
            "delta": r.delta, "delta_ci95": r.delta_ci95, "p_delta_gt0": r.p_delta_gt0,
            "default_normalized": r.default_stats["normalized"], "default_ci95": r.default_stats["normalized_ci95"],
            "default_rank": r.default_stats["rank"], "rank_change": r.rank_change} for r in self.rows}


def add_vs_default(rows: list[dict[str, Any]], comparisons: list[TrackComparison]) -> list[dict[str, Any]]:
    """``show --json`` rows with ``vs_default`` on every row: on a tuned row whose method also has a
    default-track entry on the same draws, the paired tuned − default; otherwise None."""
    paired = {k: v for c in comparisons for k, v in c.vs_default().items()}
    return [{**r, "vs_default": paired.get((r["backbone"], r["n_tasks"], r["draw_set"], r["method"]))
             if r["track"] == TRACKS[1] else None} for r in rows]


def _folder(members: list[Loaded]) -> Path:
    return members[0].path.parent


def _check_same_stack(default: list[Loaded], tuned: list[Loaded]) -> None:
    a, b = default[0].entry, tuned[0].entry
    mine, theirs = fingerprint(a), fingerprint(b)
    differ = sorted(k for k in mine if mine[k] != theirs[k])
    if a.bootstrap != b.bootstrap:
        differ.append("bootstrap")
    if differ:
        raise ValueError(f"{_folder(default)} and {_folder(tuned)} differ in {', '.join(differ)}: comparing the "
                         "tracks needs the same draws and reference items on both (rerun one track on the "
                         "other's stack)")


def _paired(d: Loaded, t: Loaded, plan: stats.ResamplePlan | None) -> dict[str, Any]:
    """The tuned row's Δ to the default row, under the shared plan (None: B = 0, the point difference)."""
    key = d.entry.method.key
    names = [f"{key}@default", f"{key}@tuned"]
    result = stats.bootstrap(draws_of([d, t], keys=names), B=0, plan=plan, reference=names[0]).to_dict()
    return result["methods"][names[1]]


def _calibration_free_ties(members: list[Loaded], group: Group, plan: stats.ResamplePlan | None) -> list[str]:
    """The tie group among a folder's methods that use no calibration data."""
    free = [m for m in members if "calibration" not in m.entry.data]
    if len(free) == len(members):
        return group.stats["tie_group"]
    return stats.bootstrap(draws_of(free), B=0, plan=plan, reference=None).to_dict()["tie_group"] if free else []


def _calibration_free(folders: dict[str, list[Loaded]], groups: dict[str, Group],
                      plan: stats.ResamplePlan | None) -> dict[str, list[str]] | None:
    """Each track's calibration-free tie group; None when no method of either track uses calibration data."""
    if not any("calibration" in m.entry.data for members in folders.values() for m in members):
        return None
    return {t: _calibration_free_ties(folders[t], groups[t], plan) for t in TRACKS}


def compare(default: list[Loaded], tuned: list[Loaded], groups: dict[str, Group]) -> TrackComparison:
    """Both folders of one (backbone, N, draw set); ``groups`` holds each track's group statistics."""
    _check_same_stack(default, tuned)
    e = default[0].entry
    folders = dict(zip(TRACKS, (default, tuned)))
    by_key = {t: {m.entry.method.key: m for m in members} for t, members in folders.items()}
    common = sorted(set(by_key["default"]) & set(by_key["tuned"]))
    B, seed = e.bootstrap.B, e.bootstrap.seed
    plan = stats.make_plan(draws_of(default), B, seed) if B > 0 else None
    rows = []
    for k in common:
        p = _paired(by_key["default"][k], by_key["tuned"][k], plan)
        rows.append(TrackRow(k, by_key["default"][k].entry, by_key["tuned"][k].entry,
                             groups["default"].stats["methods"][k], groups["tuned"].stats["methods"][k],
                             p["delta"], p["delta_ci95"], p["p_delta_gt0"]))
    rows.sort(key=lambda r: (-r.tuned_stats["normalized"], r.key))
    return TrackComparison(
        e.backbone, e.n_tasks, e.draw_set, {"B": B, "seed": seed},
        leader={t: groups[t].stats["leader"] for t in TRACKS},
        tie_group={t: groups[t].stats["tie_group"] for t in TRACKS},
        calibration_free_tie_group=_calibration_free(folders, groups, plan),
        only_on={t: sorted(set(by_key[t]) - set(common)) for t in TRACKS}, rows=rows)


def compare_tracks(loaded: list[Loaded], groups: list[Group]) -> list[TrackComparison]:
    """One comparison per (backbone, N, draw set) among ``groups`` that has a folder on each track, in the
    groups' order; ``loaded`` are the validated entries with their items (``validate_leaderboard``)."""
    members: dict[tuple[str, str, str], list[Loaded]] = {}
    for item in sorted(loaded, key=lambda x: x.entry.method.key):
        e = item.entry
        members.setdefault((e.backbone, e.track, e.draw_set.id), []).append(item)
    by_folder = {(g.backbone, g.track, g.draw_set.id): g for g in groups}
    out = []
    for g in groups:
        if g.track != TRACKS[0] or (g.backbone, TRACKS[1], g.draw_set.id) not in by_folder:
            continue
        pair = {t: by_folder[(g.backbone, t, g.draw_set.id)] for t in TRACKS}
        out.append(compare(members[(g.backbone, TRACKS[0], g.draw_set.id)],
                           members[(g.backbone, TRACKS[1], g.draw_set.id)], pair))
    return out


def _iv(ci: list[float]) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _both(per_track: dict[str, list[str]] | dict[str, str]) -> str:
    """``x on both tracks``, or each track's value named."""
    text = {t: v if isinstance(v, str) else ", ".join(v) or "none" for t, v in per_track.items()}
    if text["default"] == text["tuned"]:
        return f"{text['default']} on both tracks"
    return "; ".join(f"{text[t]} ({t})" for t in TRACKS)


def finding(c: TrackComparison) -> str:
    """Does tuning change the scores (how many Δ CIs exclude 0), the order (rank moves), the leader and ties."""
    head = f"N = {c.n_tasks} ({len(c.draw_set.draws)} draw(s)): "
    only = "".join(f" Only on the {t} track (not compared): {', '.join(c.only_on[t])}." for t in TRACKS
                   if c.only_on[t])
    if not c.rows:
        return f"{head}no method has entries on both tracks.{only}"
    up = [r for r in c.rows if r.delta_ci95[0] > 0]
    down = [r for r in c.rows if r.delta_ci95[1] < 0]
    best = max(c.rows, key=lambda r: r.delta)
    moves = sorted((r for r in c.rows if r.rank_change), key=lambda r: (-abs(r.rank_change), r.key))
    moved = ", ".join(f"{r.key} {'↑' if r.rank_change > 0 else '↓'}{abs(r.rank_change)}" for r in moves)
    free = (f" Without calibration data, tied for first: {_both(c.calibration_free_tie_group)}."
            if c.calibration_free_tie_group else "")
    return (f"{head}tuning raises {len(up)} of {len(c.rows)} methods (Δ 95 % CI above 0), lowers {len(down)} and "
            f"leaves {len(c.rows) - len(up) - len(down)} indistinguishable; the largest gain is {best.key}'s, "
            f"Δ = {best.delta:+.2f} points {_iv(best.delta_ci95)}. Ranks that move: {moved or 'none'}. "
            f"Leader: {_both(c.leader)}. Tied for first: {_both(c.tie_group)}.{free}{only}")
