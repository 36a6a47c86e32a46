"""``merge-bench submit``: run the protocol for one method (every draw of every size) and write its entries."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..merging.methods import get_method
from .check import Runner
from .convert import entries_from_sweep, plugin_file_info
from .schema import Entry
from .store import entry_path, write_new
from .validate import check_entry

if TYPE_CHECKING:
    from ..bench.plan import ExecutorConfig


@dataclass(frozen=True)
class SubmitResult:
    entry: Entry
    path: Path
    status: str  # "written", "overwritten" or "unchanged"


def parse_params(method: str, items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → typed parameter values, checked against the method's declared parameters."""
    cls = get_method(method)
    known = {p.name: p for p in cls.params}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if name.startswith(cls.name + "."):  # the `run` spelling, method.key=value, also works
            name = name[len(cls.name) + 1:]
        if not sep or not name:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        if name not in known:
            raise ValueError(f"--param {item!r}: method {cls.name!r} has no parameter {name!r}; "
                             f"it has {sorted(known) or 'none'}")
        values[name] = known[name].parse(text)
    cls(**values)  # the method's own range checks, before any compute is spent
    return values


def _same_result(a: Entry, b: Entry) -> bool:
    """Same numbers, method, params and inputs; the run date, hardware and merge-bench commit may differ."""
    def core(e: Entry) -> dict[str, Any]:
        data = e.content()
        for key in ("date", "hardware", "merge_bench"):
            data["provenance"].pop(key)
        return data
    return core(a) == core(b)


def write_sweep_entries(root: Path, record: Mapping[str, Any], *, method: str | None = None, overwrite: bool = False,
                        plugins: Mapping[str, dict[str, Any]] | None = None) -> list[SubmitResult]:
    """Write the v2 entries of a sweep record (every method, or only ``method``'s); all are checked before
    any is written. An entry with other numbers at the same place is kept unless ``overwrite``."""
    news = [n for n in entries_from_sweep(record, plugins=plugins) if method is None or n.entry.method.name == method]
    if not news:
        raise ValueError(f"the sweep produced no results for method {method!r}")
    plan = []
    for new in news:
        path = entry_path(root, new.entry)
        status = "written"
        if path.exists():
            old = Entry.model_validate_json(path.read_text(encoding="utf-8"))
            if _same_result(old, new.entry):
                plan.append((new, path, "unchanged"))
                continue
            if not overwrite:
                raise ValueError(f"{path} already holds a different result for {new.entry.method.key} "
                                 f"(normalized {old.result.normalized:.4f}, now {new.entry.result.normalized:.4f}); "
                                 "pass --overwrite to replace it. Nothing was written")
            status = "overwritten"
        plan.append((new, path, status))
    results = []
    for new, path, status in plan:
        if status != "unchanged":
            write_new(root, new)
            _, problems = check_entry(path, Path(root))
            if problems:
                raise ValueError("the new entry does not validate:\n  " + "\n  ".join(map(str, problems)))
        results.append(SubmitResult(new.entry, path, status))
    return results


def submit_sweep(method: str, backbone: str, *, root: Path, sizes: list[int], draws: int | str = 1,
                 params: Mapping[str, Any] | None = None, seed: int = 42, backend: str = "auto", device: str = "auto",
                 overwrite: bool = False, runner: Runner | None = None, out: Path | None = None,
                 batch_size: int | None = None, track: str = "default",
                 executor: ExecutorConfig | None = None) -> list[SubmitResult]:
    """Run ``method`` on every draw of every size (on ``track``) and write one entry per size; ``draws=1`` gives
    one-draw entries. ``executor``: where the evaluations run (``--executor ray``), the entries are the same
    either way."""
    from ..bench.run import RunConfig

    if runner is None:
        from ..bench.sweep import run_sweep as runner  # noqa: N813
    cls = get_method(method)
    plugins = dict([plugin_file_info(method)]) if ".py:" in method else {}
    kwargs: dict[str, Any] = dict(backbone=backbone, sizes=list(sizes), draws=draws, methods=[method],
                                  params={cls.name: dict(params or {})} if params else {}, seed=seed,
                                  backend=backend, device=device, batch_size=batch_size, track=track)
    if executor is not None:
        kwargs["executor"] = executor
    if out is not None:
        kwargs["out"] = Path(out)
    record = runner(RunConfig(**kwargs))
    return write_sweep_entries(Path(root), record, method=cls.name, overwrite=overwrite, plugins=plugins)
