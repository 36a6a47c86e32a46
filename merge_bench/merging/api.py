"""``merge_bench.merge``: the one-call API behind ``merge-bench merge``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from .engine import MergeResult, MethodSpec
from .engine import merge as run_merge
from .numerics import Numerics
from .writers import FORMATS, write


def merge(method: MethodSpec, adapters: Sequence[Union[str, Path]], *, params: Mapping[str, Any] | None = None,
          base: Union[str, Path, None] = None, out: Union[str, Path, None] = None, format: str = "auto",
          device: str = "cpu", dtype: str = "float32", overwrite: bool = False,
          targets: Union[str, Sequence[str], None] = None, progress: bool = False,
          threads: int | None = None, calibration: Sequence[Sequence[str]] | None = None) -> MergeResult:
    """Merge ``adapters`` (PEFT LoRA dirs, full checkpoints or hub ids) with ``method``.

    ``params`` are the method's hyperparameters (values or their text). Without ``out`` the merged
    deltas are returned in memory (``result.deltas``, ``result.apply_to(model)``). With ``out`` the
    merge streams into the writer (``format`` auto | peft | full | delta) and the result records
    ``result.output``; a dense result is not kept in memory then (it was freed matrix by matrix).
    ``threads``: CPU threads for the merge (None: torch's count), see ``engine.merge``. ``calibration``: one
    prompt list per adapter, for methods that need data (RegMean).
    """
    numerics = Numerics.from_names(device, dtype)
    if format not in FORMATS:
        raise ValueError(f"unknown output format {format!r}; expected one of {list(FORMATS)}")
    if out is not None and Path(out).exists() and not overwrite:
        raise ValueError(f"output {out} already exists; pass --overwrite to replace it")
    result = run_merge(method, adapters, params=params, base=base, numerics=numerics, targets=targets,
                       stream=out is not None, progress=progress, threads=threads, calibration=calibration)
    if out is not None:
        result.output = write(result, Path(out), format=format, overwrite=overwrite, progress=progress)
    return result


def task_vector(adapter: Union[str, Path], *, base: Union[str, Path], targets: Sequence[str] | None = None,
                device: str = "cpu") -> MergeResult:
    """One input's own task vector τ in memory: task arithmetic at λ = 1 over that input alone, so it is
    read exactly as every merge reads it (a full checkpoint: θ_ft − θ_0 on ``targets``)."""
    return run_merge("task_arithmetic", [adapter], params={"lam": 1.0}, base=base, targets=targets,
                     numerics=Numerics.from_names(device, "float32"))
