"""Protocol v2 entries (``leaderboard/v2``): from a sweep record, to disk, validated, grouped with statistics.

Layout: ``v2/<backbone>/<track>/<draw-set id>/`` holds one ``<method key>.json`` per method, plus the per-item
scores the statistics are computed from: ``items/reference.json`` (the pretrained and LoRA rows of every task
of the draws, shared by the folder) and ``items/methods/<method key>.json`` (the method's rows per draw). Each
entry pins both files by sha256.

Decisions: an entry holds its own aggregates (mean over draws, bootstrap CI, between-draw SD), which depend
on its rows only (the bootstrap's resampling indices depend on the tasks, not on the methods). Everything
that compares methods (Δ to simple_avg, ranks, tie groups, Holm-adjusted claims) depends on which entries the
folder holds, so it is never stored: ``group_stats`` recomputes it from the items files for ``show``, the
README and the page. v1 entries are not migrated: ``leaderboard/v1`` is validated as v1, and shown apart.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from ..bench import stats
from ..bench.draws import task_sets
from ..bench.scores import normalized as normalized_score
from ..io.files import atomic_write_text
from .convert import _get, method_source, provenance_fields
from .schema import LEADERBOARD_VERSION_2, EntryV2, content_sha256, seal_v2
from .store import entry_filename

REFERENCE_ITEMS = "items/reference.json"
SCORE_TOLERANCE = 1e-4   # per-task scores recomputed from the items (0–100 scale)
STAT_TOLERANCE = 2e-4    # aggregates are stored at 4 decimals


def draw_set_id(n: int, draws: list[list[str]]) -> str:
    """``n<N>-d<D>-<8 hex>``: the size, the number of draws, a hash of the draws' sorted task lists in order."""
    text = "|".join(",".join(sorted(d)) for d in draws)
    return f"n{n}-d{len(draws)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def folder(root: Path, entry: EntryV2) -> Path:
    return Path(root) / LEADERBOARD_VERSION_2 / entry.backbone / entry.track / entry.draw_set.id


def entry_path(root: Path, entry: EntryV2) -> Path:
    return folder(root, entry) / entry_filename(entry.method.key)


def method_items_path(key: str) -> str:
    return f"items/methods/{entry_filename(key)}"


def _dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewEntry:
    """An entry with the per-item files it pins (their JSON text, as written)."""

    entry: EntryV2
    method_items: str
    reference_items: str


def _aggregate(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"normalized": row["normalized"], "ci95": row["normalized_ci95"], "draw_sd": row["draw_sd"],
            "per_draw": row["per_draw"]}


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
                "items": {"reference": {"path": REFERENCE_ITEMS, "sha256": _sha(reference_text)},
                          "method": {"path": method_items_path(key), "sha256": _sha(items_text)}},
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
                out.append(NewEntry(seal_v2(fields), items_text, reference_text))
            except ValueError as err:
                raise ValueError(f"run record: N = {size}, method {key!r} does not make a valid entry: {err}") from None
    return out


def write_new(root: Path, new: NewEntry) -> Path:
    """Write an entry and its items; refuses a folder whose reference items differ (another stack)."""
    where = folder(root, new.entry)
    ref = where / REFERENCE_ITEMS
    if ref.exists() and ref.read_text(encoding="utf-8") != new.reference_items:
        raise ValueError(f"{ref} holds other pretrained/LoRA per-item scores than this run: the entries of one "
                         "folder share their reference rows (run `merge-bench check` to see where the stack differs)")
    atomic_write_text(ref, new.reference_items)
    atomic_write_text(where / new.entry.items.method.path, new.method_items)
    path = entry_path(root, new.entry)
    atomic_write_text(path, new.entry.to_json())
    return path


def entry_files_v2(root: Path) -> list[Path]:
    base = Path(root) / LEADERBOARD_VERSION_2
    return sorted(p for p in base.glob("*/*/*/*.json") if p.is_file()) if base.is_dir() else []


# ---- validation ----

@dataclass(frozen=True)
class Loaded:
    path: Path
    entry: EntryV2
    reference: dict[str, Any]
    method: dict[str, Any]


def _items(path: Path, pinned, problems: list, field: str) -> dict[str, Any] | None:
    from .validate import Problem

    file = path.parent / pinned.path
    if not file.is_file():
        problems.append(Problem(path, field, f"per-item file {file} is missing"))
        return None
    text = file.read_text(encoding="utf-8")
    if _sha(text) != pinned.sha256:
        problems.append(Problem(path, field, f"{file} has sha256 {_sha(text)}, the entry pins {pinned.sha256}"))
        return None
    return json.loads(text)


def draws_of(entries: list[Loaded], keys: list[str] | None = None) -> list[stats.Draw]:
    """The bootstrap draws of entries sharing one draw set and reference rows (the first entry's), methods
    keyed by ``keys`` in entry order (default: the method keys; two tracks' rows of one method need others)."""
    first = entries[0].entry
    metric = {t: i.metric for t, i in first.provenance.tasks.items()}
    names = keys if keys is not None else [e.entry.method.key for e in entries]
    out = []
    for d, draw in enumerate(first.draw_set.draws):
        ref = entries[0].reference
        out.append(stats.Draw({t: stats.TaskItems("spearman" if metric[t] == "spearman" else "mean",
                                                  ref["pretrained"][t], ref["lora"][t],
                                                  {k: e.method["draws"][d]["tasks"][t] for k, e in zip(names, entries)})
                               for t in draw.tasks}))
    return out


def _close(a: float | None, b: float | None, tol: float) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=tol))


def _numbers(loaded: Loaded) -> list:
    """Every stated number against the items: task scores, per-draw normalized, mean, CI, SD."""
    from .validate import Problem

    e, path, problems = loaded.entry, loaded.path, []
    point = stats.bootstrap(draws_of([loaded]), B=0)
    key = e.method.key
    for d, row in enumerate(e.per_draw):
        for t, score in row.scores.items():
            got = point.tasks[f"{t}@{d}" if len(e.per_draw) > 1 else t].scores[key]
            if not _close(got, score, SCORE_TOLERANCE):
                problems.append(Problem(path, f"per_draw[{d}].scores.{t}", f"states {score}, the items give {got}"))
        want = normalized_score(row.scores, e.lora.scores)
        if not _close(want, row.normalized, 1e-6):
            problems.append(Problem(path, f"per_draw[{d}].normalized", f"states {row.normalized}, the scores give {want}"))
    for row in ("pretrained", "lora"):
        for t, stated in getattr(e, row).scores.items():
            got = next(v.scores[row] for k, v in point.tasks.items() if k.split("@")[0] == t)
            if not _close(got, stated, SCORE_TOLERANCE):
                problems.append(Problem(path, f"{row}.scores.{t}", f"states {stated}, the items give {got}"))
    full = stats.bootstrap(draws_of([loaded]), B=e.bootstrap.B, seed=e.bootstrap.seed).to_dict()
    for field, stated, row in (("result", e.result, full["methods"][key]), ("pretrained.result", e.pretrained.result,
                                                                           full["pretrained"])):
        pairs = [("normalized", stated.normalized, row["normalized"]), ("draw_sd", stated.draw_sd, row["draw_sd"]),
                 ("ci95[0]", stated.ci95[0], row["normalized_ci95"][0]),
                 ("ci95[1]", stated.ci95[1], row["normalized_ci95"][1])]
        pairs += [(f"per_draw[{i}]", a, b) for i, (a, b) in enumerate(zip(stated.per_draw, row["per_draw"]))]
        for name, a, b in pairs:
            if not _close(a, b, STAT_TOLERANCE):
                problems.append(Problem(path, f"{field}.{name}", f"states {a}, the items give {b}"))
    return problems


def _tuning_problems(path: Path, entry: EntryV2) -> list:
    """A tuned entry: one search per draw, within its budget, starting at the entry's params (with the
    draw's seed), its choice the first best of its path; a default-track entry has no tuning."""
    from .validate import Problem

    if entry.track == "default":
        return [Problem(path, "tuning", "a default-track entry has no tuning")] if entry.tuning is not None else []
    if entry.tuning is None or [t.index for t in entry.tuning] != [d.index for d in entry.draw_set.draws]:
        return [Problem(path, "tuning", "a tuned entry holds one search per draw, in draw order")]
    problems = [] if entry.data.startswith("validation") else [Problem(path, "data", "a tuned entry uses validation data")]
    for i, t in enumerate(entry.tuning):
        where = f"tuning[{i}]"
        start = t.path[0].params
        if {k: v for k, v in start.items() if k != "seed"} != entry.method.params:
            problems.append(Problem(path, f"{where}.path[0]", f"starts at {start}, not the entry's params"))
        if not t.evaluations == len(t.path) <= t.budget:
            problems.append(Problem(path, f"{where}.evaluations", f"{t.evaluations} evaluations, {len(t.path)} "
                                    f"steps, budget {t.budget}: must be equal, within the budget"))
        best = max(step.validation_score for step in t.path)
        first = next(step for step in t.path if step.validation_score == best)
        if t.chosen != first.params or not _close(t.validation_score, best, STAT_TOLERANCE):
            problems.append(Problem(path, f"{where}.chosen", "is not the first best configuration of the path"))
    return problems


def _seeded_draws(entry: EntryV2) -> list[list[str]] | None:
    """The draws the entry's seed gives on its backbone's pool (None for a backbone not registered here)."""
    from ..backbones import get_backbone

    try:
        pool = get_backbone(entry.backbone).pickable_tasks
    except (KeyError, ValueError):
        return None
    try:
        sets = task_sets(pool, [entry.n_tasks], entry.draw_set.requested, entry.draw_set.seed)[entry.n_tasks]
    except ValueError:
        return []
    return [sorted(s) for s in sets]


def check_entry_v2(path: Path, root: Path) -> tuple[Loaded | None, list]:
    from .validate import Problem, _method_problems, _schema_problems, load_raw

    data, problems = load_raw(path)
    if problems:
        return None, problems
    if isinstance(data, dict) and isinstance(data.get("entry_sha256"), str) and content_sha256(data) != data["entry_sha256"]:
        problems.append(Problem(path, "entry_sha256", f"content hash mismatch: the file hashes to "
                                f"{content_sha256(data)}, the entry states {data['entry_sha256']} (edited by hand?)"))
    try:
        entry = EntryV2.model_validate(data)
    except ValidationError as err:
        return None, problems + _schema_problems(path, err)
    if Path(path).resolve() != entry_path(root, entry).resolve():
        problems.append(Problem(path, "(location)", f"the entry belongs at {entry_path(root, entry)}"))
    sets = [d.tasks for d in entry.draw_set.draws]
    if entry.draw_set.id != draw_set_id(entry.n_tasks, sets):
        problems.append(Problem(path, "draw_set.id", f"does not match the draws (expected "
                                f"{draw_set_id(entry.n_tasks, sets)})"))
    if any(len(s) != entry.n_tasks or len(set(s)) != len(s) for s in sets):
        problems.append(Problem(path, "draw_set.draws", f"every draw needs {entry.n_tasks} distinct tasks"))
    elif (seeded := _seeded_draws(entry)) is not None and [sorted(s) for s in sets] != seeded:
        problems.append(Problem(path, "draw_set.draws", f"are not the draws of seed {entry.draw_set.seed} "
                                f"(--draws {entry.draw_set.requested}): expected {seeded}"))
    if [d.index for d in entry.per_draw] != [d.index for d in entry.draw_set.draws] or \
            any(sorted(r.scores) != sorted(d.tasks) for r, d in zip(entry.per_draw, entry.draw_set.draws)):
        problems.append(Problem(path, "per_draw", "must list each draw of draw_set, with scores on its tasks"))
    tasks = entry.tasks
    for field, mapping in (("pretrained.scores", entry.pretrained.scores), ("lora.scores", entry.lora.scores),
                           ("provenance.adapters", entry.provenance.adapters),
                           ("provenance.tasks", entry.provenance.tasks)):
        if sorted(mapping) != tasks:
            problems.append(Problem(path, field, f"has tasks {sorted(mapping)}, the draws use {tasks}"))
    problems += _method_problems(path, entry, root.parent, implied=("seed",))
    problems += _tuning_problems(path, entry)
    reference = _items(path, entry.items.reference, problems, "items.reference")
    method = _items(path, entry.items.method, problems, "items.method")
    if reference is None or method is None or problems:
        return None, problems
    loaded = Loaded(path, entry, reference, method)
    try:
        problems += _numbers(loaded)
    except (KeyError, IndexError, ValueError, TypeError) as err:
        problems.append(Problem(path, "items", f"the per-item files do not fit the entry: {err!r}"))
    return (loaded if not problems else None), problems


def fingerprint(e: EntryV2) -> dict[str, Any]:
    """What entries compared on the same items must share: draws, reference rows, base, adapters, samples."""
    return {"draw_set": e.draw_set.model_dump(), "reference": e.items.reference.sha256, "n_tasks": e.n_tasks,
            "base": e.provenance.backbone.base_sha256,
            "adapters": {t: a.sha256 for t, a in e.provenance.adapters.items()},
            "samples": {t: i.sample_ids_sha256 for t, i in e.provenance.tasks.items()}}


def validate_v2(root: Path) -> tuple[list[Loaded], list]:
    """Every v2 entry checked alone, then each folder for one shared draw set and reference."""
    from .validate import Problem

    loaded, problems = [], []
    for path in entry_files_v2(root):
        item, found = check_entry_v2(path, Path(root))
        problems += found
        if item is not None:
            loaded.append(item)
    for members in _folders(loaded).values():
        first = fingerprint(members[0].entry)
        for m in members[1:]:
            mine = fingerprint(m.entry)
            for field in sorted(k for k in first if first[k] != mine[k]):
                problems.append(Problem(m.path, field, f"differs from {members[0].path}: the entries of one folder "
                                        "share their draws, reference rows and inputs"))
    return loaded, problems


def _folders(loaded: list[Loaded]) -> dict[Path, list[Loaded]]:
    out: dict[Path, list[Loaded]] = defaultdict(list)
    for item in sorted(loaded, key=lambda x: str(x.path)):
        out[item.path.parent].append(item)
    return out


# ---- groups with statistics (show, README, page, plots) ----

@dataclass(frozen=True)
class GroupV2:
    backbone: str
    track: str
    n_tasks: int
    draw_set: Any                       # schema.DrawSet
    entries: list[EntryV2]              # sorted by method key
    stats: dict[str, Any]               # stats.bootstrap(...).to_dict() over the folder's methods
    # where some methods use data (calibration, validation): the tie group among the data-free ones alone
    data_free_tie_group: list[str] | None = None

    @property
    def title(self) -> str:
        return f"{self.backbone} · {self.track} · N = {self.n_tasks} ({len(self.draw_set.draws)} draw(s))"


def group_stats(loaded: list[Loaded], backbone: str | None = None) -> list[GroupV2]:
    """One group per folder, sorted by backbone, track and N; the bootstrap rerun over all its methods."""
    groups = []
    for members in _folders(loaded).values():
        e = members[0].entry
        if backbone is not None and e.backbone != backbone:
            continue
        result = stats.bootstrap(draws_of(members), B=e.bootstrap.B, seed=e.bootstrap.seed).to_dict()
        free = [m for m in members if m.entry.data == "none"]
        free_ties = None
        if len(free) not in (0, len(members)):
            free_ties = stats.bootstrap(draws_of(free), B=e.bootstrap.B, seed=e.bootstrap.seed).to_dict()["tie_group"]
        groups.append(GroupV2(e.backbone, e.track, e.n_tasks, e.draw_set, [m.entry for m in members], result,
                              free_ties))
    return sorted(groups, key=lambda g: (g.backbone, g.track, g.n_tasks, g.draw_set.id))


def show_rows(groups: list[GroupV2]) -> list[dict[str, Any]]:
    """``leaderboard show --json``: one row per (backbone, track, N, method), best first within a group."""
    rows = []
    for g in groups:
        for e in sorted(g.entries, key=lambda x: -g.stats["methods"][x.method.key]["normalized"]):
            s = g.stats["methods"][e.method.key]
            rows.append({"backbone": g.backbone, "track": g.track, "n_tasks": g.n_tasks,
                         "draws": [d.tasks for d in g.draw_set.draws], "draw_set": g.draw_set.id,
                         "method": e.method.key, "name": e.method.name, "params": e.method.params, "data": e.data,
                         "normalized": s["normalized"], "ci95": s["normalized_ci95"], "per_draw": s["per_draw"],
                         "draw_sd": s["draw_sd"], "rank": s["rank"], "rank_ci95": s["rank_ci95"],
                         "tied_with_leader": s["tied_with_leader"], "delta_vs_simple_avg": s["delta"],
                         "delta_ci95": s["delta_ci95"], "p_delta_gt0": s["p_delta_gt0"], "tuning": _tuning_row(e)})
    return rows


def _tuning_row(e: EntryV2) -> dict[str, Any] | None:
    """The tuned track's search in ``show --json``: per draw (in draw order) its evaluations, choice and path."""
    if e.tuning is None:
        return None
    return {"evaluations": [t.evaluations for t in e.tuning], "chosen": [t.chosen for t in e.tuning],
            "path": [[step.model_dump() for step in t.path] for t in e.tuning]}


def finding(g: GroupV2, a: str = "star", b: str = "simple_avg") -> str:
    """One sentence: does ``a`` beat ``b`` at this N (paired Δ, its CI), and who is tied for first."""
    m = g.stats["methods"]
    tie = ", ".join(g.stats["tie_group"])
    if a not in m or b not in m:
        return f"N = {g.n_tasks}: tied for first: {tie}."
    pair = next((p for p in g.stats["pairs"] if {p["a"], p["b"]} == {a, b}), None)
    d, (lo, hi) = m[a]["delta"], m[a]["delta_ci95"]
    verdict = ("beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from")
    holm = f", Holm-adjusted p = {pair['p_holm']:.3g}" if pair else ""
    free = (f" Among the data-free methods, tied for first: {', '.join(g.data_free_tie_group)}."
            if g.data_free_tie_group else "")
    return (f"N = {g.n_tasks} ({len(g.draw_set.draws)} draw(s)): {a} {verdict} {b}: Δ = {d:+.2f} points "
            f"[95 % CI {lo:+.2f}, {hi:+.2f}], P(Δ > 0) = {m[a]['p_delta_gt0']:.2f}{holm}. Tied for first: {tie}.{free}")
