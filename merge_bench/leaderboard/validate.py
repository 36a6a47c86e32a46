"""Check leaderboard entries: schema, hash, location, draws, method, every number against the per-item files,
and that the entries of one folder share their draws and reference rows.

Every problem names the file and the field; nothing stops at the first problem, so one run of
``merge-bench leaderboard validate`` lists everything to fix.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..bench import stats
from ..bench.draws import task_sets
from ..bench.scores import normalized as normalized_score
from ..io.files import sha256_file
from ..merging.methods import available_methods
from .convert import sha256_text
from .schema import Entry, content_sha256
from .store import draw_set_id, entry_files, entry_path

SCORE_TOLERANCE = 1e-4   # per-task scores recomputed from the items (0–100 scale)
STAT_TOLERANCE = 2e-4    # aggregates are stored at 4 decimals


@dataclass(frozen=True)
class Problem:
    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


def _schema_problems(path: Path, err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        field = ".".join(str(part) for part in e["loc"]) or "(entry)"
        kind = "missing field" if e["type"] == "missing" else e["msg"]
        if e["type"] == "extra_forbidden":
            kind = "unknown field (not in the entry schema)"
        out.append(Problem(path, field, kind))
    return out


def _method_problems(path: Path, entry, plugin_base: Path | None, implied: tuple[str, ...] = ()) -> list[Problem]:
    """``implied``: parameters an entry leaves out because the protocol sets them (v2: a seeded method's seed)."""
    method = entry.method
    out: list[Problem] = []
    if method.key != method.name and not (method.key.startswith(method.name + "[") and method.key.endswith("]")):
        out.append(Problem(path, "method.key",
                           f"{method.key!r} must be the method name {method.name!r} or name[params]"))
    registry = available_methods()
    cls = registry.get(method.name)
    if cls is None:
        if method.source != "file":
            return out + [Problem(path, "method.name", f"unknown method {method.name!r}: not registered (known: "
                                  f"{', '.join(sorted(registry))}) and not recorded as a plugin file with its sha256")]
        spec_file = Path(method.plugin_spec.rpartition(":")[0])  # type: ignore[union-attr]
        candidates = [spec_file] if spec_file.is_absolute() else [p / spec_file for p in (Path.cwd(), plugin_base) if p]
        for candidate in candidates:
            if candidate.is_file() and sha256_file(candidate) != method.plugin_sha256:
                out.append(Problem(path, "method.plugin_sha256", f"plugin file {candidate} has sha256 "
                                   f"{sha256_file(candidate)}, the entry was made with {method.plugin_sha256}"))
                break
        return out
    declared = {p.name: p for p in cls.params}
    unknown = sorted(set(method.params) - set(declared))
    missing = sorted(set(declared) - set(method.params) - set(implied))
    if unknown:
        out.append(Problem(path, "method.params",
                           f"{method.name!r} has no parameter(s) {unknown}; it has {sorted(declared)}"))
    if missing:
        out.append(Problem(path, "method.params",
                           f"missing parameter(s) {missing}: entries record every parameter, defaults included"))
    for name in sorted(set(method.params) & set(declared)):
        try:
            declared[name].check(method.params[name])
        except ValueError as err:
            out.append(Problem(path, f"method.params.{name}", str(err)))
    return out


def load_raw(path: Path) -> tuple[Any, list[Problem]]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, [Problem(path, "(file)", f"cannot read JSON: {err}")]


@dataclass(frozen=True)
class Loaded:
    path: Path
    entry: Entry
    reference: dict[str, Any]
    method: dict[str, Any]


def _items(path: Path, pinned, problems: list, field: str) -> dict[str, Any] | None:
    file = path.parent / pinned.path
    if path.parent.resolve() not in file.resolve().parents:  # the schema refuses '..'; a symlink could still leave
        problems.append(Problem(path, f"{field}.path", f"{pinned.path!r} leads outside the entry's folder"))
        return None
    if not file.is_file():
        problems.append(Problem(path, field, f"per-item file {file} is missing"))
        return None
    text = file.read_text(encoding="utf-8")
    if sha256_text(text) != pinned.sha256:
        problems.append(Problem(path, field, f"{file} has sha256 {sha256_text(text)}, the entry pins {pinned.sha256}"))
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
    """Every stated number against the items: task scores, per-draw normalized, mean, CI, SD, retained gain."""
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
        pairs += [("retained", stated.retained, row["retained"])]
        pairs += [(f"retained_ci95[{i}]", (stated.retained_ci95 or (None, None))[i],
                   (row["retained_ci95"] or (None, None))[i]) for i in (0, 1)]
        pairs += [(f"retained_per_draw[{i}]", a, b)
                  for i, (a, b) in enumerate(zip(stated.retained_per_draw or [], row["retained_per_draw"] or []))]
        for name, a, b in pairs:
            if not _close(a, b, STAT_TOLERANCE):
                problems.append(Problem(path, f"{field}.{name}", f"states {a}, the items give {b}"))
    if e.retained_excluded != full["retained_excluded"]:
        problems.append(Problem(path, "retained_excluded", f"states {e.retained_excluded}, the items give "
                                f"{full['retained_excluded']} (the tasks where the LoRA does not beat pretrained)"))
    return problems


def _tuning_problems(path: Path, entry: Entry) -> list:
    """A tuned entry: one search per draw, within its budget, starting at the entry's params (with the
    draw's seed), its choice the first best of its path; a default-track entry has no tuning."""
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


def _seeded_draws(entry: Entry) -> list[list[str]] | None:
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


def check_entry(path: Path, root: Path) -> tuple[Loaded | None, list]:
    data, problems = load_raw(path)
    if problems:
        return None, problems
    if isinstance(data, dict) and isinstance(data.get("entry_sha256"), str) and content_sha256(data) != data["entry_sha256"]:
        problems.append(Problem(path, "entry_sha256", f"content hash mismatch: the file hashes to "
                                f"{content_sha256(data)}, the entry states {data['entry_sha256']} (edited by hand?)"))
    try:
        entry = Entry.model_validate(data)
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


def fingerprint(e: Entry) -> dict[str, Any]:
    """What entries compared on the same items must share: draws, reference rows, base, adapters, samples."""
    return {"draw_set": e.draw_set.model_dump(), "reference": e.items.reference.sha256, "n_tasks": e.n_tasks,
            "base": e.provenance.backbone.base_sha256,
            "adapters": {t: a.sha256 for t, a in e.provenance.adapters.items()},
            "samples": {t: i.sample_ids_sha256 for t, i in e.provenance.tasks.items()}}


def validate_leaderboard(root: Path) -> tuple[list[Loaded], list[Problem]]:
    """Every entry checked alone, then each folder for one shared draw set and reference."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"leaderboard directory {root} does not exist")
    loaded, problems = [], []
    for path in entry_files(root):
        item, found = check_entry(path, Path(root))
        problems += found
        if item is not None:
            loaded.append(item)
    for members in by_folder(loaded).values():
        first = fingerprint(members[0].entry)
        for m in members[1:]:
            mine = fingerprint(m.entry)
            for field in sorted(k for k in first if first[k] != mine[k]):
                problems.append(Problem(m.path, field, f"differs from {members[0].path}: the entries of one folder "
                                        "share their draws, reference rows and inputs"))
    return loaded, problems


def by_folder(loaded: list[Loaded]) -> dict[Path, list[Loaded]]:
    out: dict[Path, list[Loaded]] = defaultdict(list)
    for item in sorted(loaded, key=lambda x: str(x.path)):
        out[item.path.parent].append(item)
    return out
