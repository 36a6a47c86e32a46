"""Check leaderboard entries: schema, hash, recomputed scores, known methods, consistent references.

Every problem names the file and the field; nothing stops at the first problem, so one run of
``merge-bench leaderboard validate`` lists everything to fix.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from ..merging.methods import available_methods
from ..bench.scores import normalized as normalized_score
from ..io.files import sha256_file
from .convert import NORMALIZED_TOLERANCE
from .schema import Entry, content_sha256
from .store import entry_files, entry_relpath, task_set_id


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


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=NORMALIZED_TOLERANCE)


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


def check_entry_data(data: Any, path: Path, root: Path | None = None) -> tuple[Entry | None, list[Problem]]:
    """Check one entry's raw JSON data; returns the parsed Entry (None if the schema fails) and problems."""
    if not isinstance(data, dict):
        return None, [Problem(path, "(entry)", f"expected a JSON object, got {type(data).__name__}")]
    problems: list[Problem] = []
    stated = data.get("entry_sha256")
    if isinstance(stated, str):
        try:
            actual = content_sha256(data)
        except ValueError as err:  # NaN/inf cannot be hashed canonically
            actual = f"(unhashable: {err})"
        if actual != stated:
            problems.append(Problem(path, "entry_sha256", f"content hash mismatch: the file hashes to {actual}, "
                                    f"the entry states {stated} (edited by hand or corrupted)"))
    try:
        entry = Entry.model_validate(data)
    except ValidationError as err:
        return None, problems + _schema_problems(path, err)

    tasks = entry.task_set.tasks
    if entry.task_set.id != task_set_id(tasks):
        problems.append(Problem(path, "task_set.id", f"{entry.task_set.id!r} does not match the tasks {tasks} "
                                f"(expected {task_set_id(tasks)!r})"))
    if root is not None:
        expected = entry_relpath(entry.backbone, entry.task_set.id, entry.method.key)
        try:
            actual_rel = Path(path).resolve().relative_to(Path(root).resolve())
        except ValueError:
            actual_rel = None
        if actual_rel != expected:
            problems.append(Problem(path, "(location)", f"the entry belongs at {Path(root) / expected}"))
    if entry.provenance.backbone.name != entry.backbone:
        problems.append(Problem(path, "provenance.backbone.name",
                                f"{entry.provenance.backbone.name!r} differs from backbone {entry.backbone!r}"))
    keyed = {
        "scores": entry.scores, "pretrained.scores": entry.pretrained.scores, "lora.scores": entry.lora.scores,
        "provenance.adapters": entry.provenance.adapters, "provenance.tasks": entry.provenance.tasks,
    }
    task_keys_ok = True
    for field, mapping in keyed.items():
        if sorted(mapping) != tasks:
            task_keys_ok = False
            problems.append(Problem(path, field, f"has tasks {sorted(mapping)}, but the task set is {tasks}"))
    if task_keys_ok:
        zero = [t for t in tasks if entry.lora.scores[t] == 0]
        if zero:
            problems.append(Problem(path, "lora.scores", f"LoRA score is 0 on {zero}: normalized scores are undefined"))
        else:
            for field, row_scores, stated_norm in (
                ("normalized", entry.scores, entry.normalized),
                ("pretrained.normalized", entry.pretrained.scores, entry.pretrained.normalized),
                ("lora.normalized", entry.lora.scores, entry.lora.normalized),
            ):
                computed = normalized_score(row_scores, entry.lora.scores)
                if not _close(computed, stated_norm):
                    problems.append(Problem(path, field, f"states {stated_norm!r} but the per-task scores give "
                                            f"{computed!r} (tolerance {NORMALIZED_TOLERANCE})"))
    problems += _method_problems(path, entry, root.parent if root is not None else None)
    return entry, problems


def _reference_fingerprint(entry: Entry) -> dict[str, Any]:
    prov = entry.provenance
    out: dict[str, Any] = {}
    for t in entry.task_set.tasks:
        out[f"pretrained.scores.{t}"] = entry.pretrained.scores.get(t)
        out[f"lora.scores.{t}"] = entry.lora.scores.get(t)
        if t in prov.adapters:
            out[f"provenance.adapters.{t}.sha256"] = prov.adapters[t].sha256
        if t in prov.tasks:
            out[f"provenance.tasks.{t}.sample_ids_sha256"] = prov.tasks[t].sample_ids_sha256
    out["provenance.backbone.base_sha256"] = prov.backbone.base_sha256
    return out


def reference_mismatches(path: Path, entry: Entry, ref_path: Path, ref: Entry) -> list[Problem]:
    """Where ``entry`` disagrees with ``ref`` (same backbone × task set) on the reference rows."""
    ref_fp = _reference_fingerprint(ref)
    problems = []
    for field, value in _reference_fingerprint(entry).items():
        base = ref_fp.get(field)
        same = _close(value, base) if isinstance(value, float) and isinstance(base, float) else value == base
        if not same:
            problems.append(Problem(path, field, f"{value!r} differs from {base!r} in {ref_path}: "
                                    "entries of one backbone × task set share their reference rows"))
    return problems


def check_references(entries: Iterable[tuple[Path, Entry]]) -> list[Problem]:
    """Entries of one backbone × task set must share the pretrained and LoRA rows (and what they rest on).

    The first entry of a group by path is the reference the others are compared with.
    """
    groups: dict[tuple[str, str], list[tuple[Path, Entry]]] = defaultdict(list)
    for path, entry in entries:
        groups[(entry.backbone, entry.task_set.id)].append((path, entry))
    problems = []
    for members in groups.values():
        members.sort(key=lambda pe: str(pe[0]))
        ref_path, ref = members[0]
        for path, entry in members[1:]:
            problems += reference_mismatches(path, entry, ref_path, ref)
    return problems


def load_raw(path: Path) -> tuple[Any, list[Problem]]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, [Problem(path, "(file)", f"cannot read JSON: {err}")]


def validate_leaderboard(root: Path) -> tuple[list[Entry], list[Problem]]:
    """Validate every entry under ``root``; returns the entries that parsed and all problems."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"leaderboard directory {root} does not exist")
    parsed: list[tuple[Path, Entry]] = []
    problems: list[Problem] = []
    for path in entry_files(root):
        data, read_problems = load_raw(path)
        problems += read_problems
        if read_problems:
            continue
        entry, entry_problems = check_entry_data(data, path, root)
        problems += entry_problems
        if entry is not None:
            parsed.append((path, entry))
    problems += check_references(parsed)
    return [e for _, e in parsed], problems
