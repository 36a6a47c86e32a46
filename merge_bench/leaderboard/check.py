"""``merge-bench check``: rerun a baseline's runs and compare every number with it.

A baseline is a leaderboard directory, entry files, or a run record. Its results are grouped into
snapshots (one backbone × task set × seed × backend × device), each rerun through a ``runner``
(default ``merge_bench.run.run_benchmark``; tests inject their own), and every method's normalized
and per-task scores, plus the pretrained and LoRA rows, are compared at a tolerance in score points.
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

from .convert import _get
from .schema import Entry
from .store import default_root, entry_files, task_set_id
from .tables import LORA_LABEL, PRETRAINED_LABEL
from .validate import check_entry_data, check_references, load_raw

# Score points (0–100 scale) a rerun may move before check fails. Measured on the embedded backbone
# (2-core AMD EPYC, AVX2): an identical rerun, and a rerun on one thread with MKL and oneDNN forced to
# their SSE4 kernels and ATen to its default (non-AVX) kernels, a stand-in for another CPU, both repeated
# all 14 numbers of the CI snapshot exactly (±0). Greedy answers near a tie can still flip on other
# hardware (a GPU, AVX-512), so the default allows one item of a 200-item task: 0.5 points. A regression
# that matters moves more than one answer.
DEFAULT_TOLERANCE = 0.5

Runner = Callable[[Any], Mapping[str, Any]]


@dataclass
class MethodResult:
    name: str
    spec: str  # what RunConfig.methods takes: a registered name or a path/file.py:Class
    params: dict[str, Any]
    scores: dict[str, float]
    normalized: float


@dataclass
class Snapshot:
    backbone: str
    tasks: list[str]
    seed: int
    backend: str
    device: str
    batch_size: int | None
    pretrained: dict[str, float]
    pretrained_normalized: float
    lora: dict[str, float]
    methods: dict[str, MethodResult] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backbone} · {task_set_id(self.tasks)}"


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


def snapshot_from_record(record: Mapping[str, Any]) -> Snapshot:
    config = _get(record, "config")
    where = "run record config"
    pretrained = dict(_get(record, "pretrained", "scores"))
    snap = Snapshot(
        backbone=_get(config, "backbone", where=where), tasks=sorted(pretrained),
        seed=_get(config, "seed", where=where), backend=_get(config, "backend", where=where),
        device=_get(config, "device", where=where), batch_size=config.get("batch_size"),
        pretrained=pretrained,
        pretrained_normalized=_get(record, "pretrained", "normalized"), lora=dict(_get(record, "lora", "scores")),
        versions=dict(record.get("versions") or {}),
    )
    for key, item in _get(record, "methods").items():
        plugin = item.get("plugin") if isinstance(item.get("plugin"), Mapping) else {}
        name = _get(item, "method", where=f"run record methods[{key!r}]")
        spec = plugin.get("spec") or item.get("spec") or name
        snap.methods[key] = MethodResult(name, spec, dict(item.get("params") or {}),
                                         dict(_get(item, "scores", where=f"run record methods[{key!r}]")),
                                         _get(item, "normalized", where=f"run record methods[{key!r}]"))
    return snap


def snapshots_from_entries(entries: Iterable[Entry]) -> list[Snapshot]:
    groups: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        p = e.provenance
        groups[(e.backbone, e.task_set.id, p.seed, p.backend, p.device, p.batch_size)].append(e)
    snaps = []
    for members in groups.values():
        first = members[0]
        p = first.provenance
        snap = Snapshot(first.backbone, list(first.task_set.tasks), p.seed, p.backend, p.device, p.batch_size,
                        dict(first.pretrained.scores), first.pretrained.normalized, dict(first.lora.scores),
                        versions=p.versions.model_dump())
        for e in sorted(members, key=lambda e: e.method.key):
            spec = e.method.plugin_spec if e.method.source == "file" else e.method.name
            snap.methods[e.method.key] = MethodResult(e.method.name, spec or e.method.name, dict(e.method.params),
                                                      dict(e.scores), e.normalized)
        snaps.append(snap)
    return sorted(snaps, key=lambda s: s.label)


def _entries_at(paths: list[Path]) -> list[Entry]:
    parsed, problems = [], []
    for path in paths:
        data, read_problems = load_raw(path)
        entry, entry_problems = (None, read_problems) if read_problems else check_entry_data(data, path)
        problems += entry_problems
        if entry is not None:
            parsed.append((path, entry))
    problems += check_references(parsed)
    if problems:
        raise ValueError("the baseline entries are not valid:\n  " + "\n  ".join(map(str, problems)))
    return [e for _, e in parsed]


def load_baseline(paths: Iterable[Path]) -> list[Snapshot]:
    """Snapshots from leaderboard directories (any level of one), entry files and run records."""
    entry_paths: list[Path] = []
    snaps: list[Snapshot] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = entry_files(path) or sorted(path.rglob("*.json"))
            found = [p for p in found if p.name != "entry.schema.json"]
            if not found:
                raise ValueError(f"baseline directory {path} holds no leaderboard entries (*.json); add some with "
                                 "`merge-bench submit` or pass --baseline a run record")
            entry_paths += found
        elif path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"baseline {path} is not JSON: {err}") from None
            if isinstance(data, dict) and "record_version" in data:
                try:
                    snaps.append(snapshot_from_record(data))
                except ValueError as err:
                    raise ValueError(f"baseline {path}: {err}") from None
            else:
                entry_paths.append(path)
        else:
            raise FileNotFoundError(f"baseline {path} does not exist "
                                    "(expected a leaderboard directory, entry files or a run record)")
    return snaps + (snapshots_from_entries(_entries_at(entry_paths)) if entry_paths else [])


def _filter(snaps: list[Snapshot], backbone: str | None, methods: list[str] | None) -> list[Snapshot]:
    out = []
    for snap in snaps:
        if backbone is not None and snap.backbone != backbone:
            continue
        if methods:
            snap.methods = {k: m for k, m in snap.methods.items() if k in methods or m.name in methods}
            if not snap.methods:
                continue
        out.append(snap)
    if not out:
        raise ValueError(f"nothing to check: the baseline has no results for backbone={backbone!r} methods={methods!r}")
    return out


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


def rerun(snap: Snapshot, runner: Runner, device: str | None = None, out: Path | None = None,
          batch_size: int | None = None, cache_dir: Path | None = None) -> Snapshot:
    """Rerun a snapshot. RunConfig takes one parameter set per method name, so variants of one method
    (``star[eta=20]``, ``star[eta=40]``) go to separate runs; the pretrained and LoRA rows compared are
    the first run's (the later runs read them from the same result cache)."""
    from ..bench.run import RunConfig  # the run pipeline imports the engine and evaluator: load it only here

    rounds: list[dict[str, MethodResult]] = []
    for key, m in snap.methods.items():
        target = next((r for r in rounds if all(o.name != m.name for o in r.values())), None)
        if target is None:
            rounds.append(target := {})
        target[key] = m
    now: Snapshot | None = None
    for methods in rounds or [{}]:  # no methods: still rerun the pretrained and LoRA rows
        kwargs: dict[str, Any] = dict(
            backbone=snap.backbone, tasks=list(snap.tasks), methods=[m.spec for m in methods.values()],
            params={m.name: key_overrides(k, m.params) for k, m in methods.items()}, seed=snap.seed,
            backend=snap.backend, device=device or snap.device, limit=None, batch_size=batch_size or snap.batch_size,
            cache_dir=cache_dir)
        if out is not None:
            kwargs["out"] = Path(out)
        result = snapshot_from_record(runner(RunConfig(**kwargs)))
        if now is None:
            now = result
        else:
            now.methods.update(result.methods)
    return now  # type: ignore[return-value]  # the loop runs at least once


def compare(base: Snapshot, now: Snapshot, tolerance: float) -> tuple[list[Difference], int]:
    """Every number of ``base`` against ``now``; returns the differences beyond tolerance and the count compared."""
    diffs: list[Difference] = []
    count = 0

    def cmp(row: str, field_name: str, b: float, n: float | None) -> None:
        nonlocal count
        count += 1
        if n is None or abs(n - b) > tolerance:
            diffs.append(Difference(base.label, row, field_name, b, n))

    cmp(PRETRAINED_LABEL, "normalized", base.pretrained_normalized, now.pretrained_normalized)
    for t in base.tasks:
        cmp(PRETRAINED_LABEL, t, base.pretrained[t], now.pretrained.get(t))
        cmp(LORA_LABEL, t, base.lora[t], now.lora.get(t))
    for key, m in base.methods.items():
        got = now.methods.get(key)
        cmp(key, "normalized", m.normalized, got.normalized if got else None)
        for t in base.tasks:
            cmp(key, t, m.scores[t], got.scores.get(t) if got else None)
    return diffs, count


def run_check(
    baseline: Iterable[Path] | None = None, *, tolerance: float = DEFAULT_TOLERANCE, backbone: str | None = "tiny",
    methods: list[str] | None = None, runner: Runner | None = None, device: str | None = None, out: Path | None = None,
    batch_size: int | None = None,
) -> CheckReport:
    """Rerun the baseline (default: the repository leaderboard's entries for ``backbone``) and compare."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if runner is None:
        from ..bench.run import run_benchmark as runner  # noqa: N813
    snaps = _filter(load_baseline(list(baseline) if baseline else [default_root()]), backbone, methods)
    report = CheckReport([], 0, [s.label for s in snaps], tolerance)
    # A fresh result cache: a check must evaluate, not read back what an earlier run on this machine cached.
    with tempfile.TemporaryDirectory(prefix="merge-bench-check-") as fresh:
        for snap in snaps:
            _check_snapshot(report, snap, rerun(snap, runner, device=device, out=out, batch_size=batch_size,
                                                cache_dir=Path(fresh)), tolerance)
    return report


def _check_snapshot(report: CheckReport, snap: Snapshot, now: Snapshot, tolerance: float) -> None:
    diffs, count = compare(snap, now, tolerance)
    report.differences += diffs
    report.compared += count
    for name in sorted(set(snap.versions) | set(now.versions)):
        if snap.versions.get(name) != now.versions.get(name):
            report.notes.append(f"{snap.label}: {name} {snap.versions.get(name)} in the baseline, "
                                f"{now.versions.get(name)} now")
