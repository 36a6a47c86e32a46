"""The merge engine: instantiate a method, stream every targeted matrix's task vectors through it,
and hold (or stream out) the merged deltas.

Memory: the engine keeps one matrix's N task vectors at a time (``del`` before the next is built),
so an elementwise method on dense inputs peaks at about one matrix × N (plus its own workspace).
Factor-space merges of LoRA inputs hold up to ``threads`` matrices at once (see ``_run``); theirs
are small (N factor pairs and a few Σr×m blocks each).
With ``stream=True`` the merged matrices are produced lazily while a writer consumes them, and each
is freed once written; otherwise they are collected into ``MergeResult.deltas``.
"""
from __future__ import annotations

import logging
import platform
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .adapters import BaseModel, Plan, matches_targets, module_of, open_input, plan
from .delta import Delta, LowRank
from ..io.files import sha256_files
from ..io.tensors import all_finite
from .methods import MergeMethod, get_method
from .numerics import COMPUTE_DTYPE, Numerics

log = logging.getLogger(__name__)

MethodSpec = Union[str, type, MergeMethod]

# At most this many matrices are merged at once (factor-space merges on the CPU, see ``_run``); on a
# larger CPU each worker gets its share of the threads: more Python threads would only queue on the GIL.
MAX_WORKERS = 8


@dataclass(frozen=True)
class InputRecord:
    """One input as recorded in merge_config.json: where it was, what it was, and its content hash.

    The hash is computed on a background thread while the merge runs (hashlib releases the GIL),
    so reading ``sha256``/``files`` may wait for it.
    """

    path: str  # as given: a directory or a hub id
    resolved: str  # the directory read (for a hub id, the snapshot folder named by its commit)
    kind: str  # "lora" or "full"
    digest: Future = field(repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """Over the files the input was read from (see io.sha256_files)."""
        return self.digest.result()[0]

    @property
    def files(self) -> dict[str, str]:
        return self.digest.result()[1]


@dataclass
class MergeResult:
    """The merged Δ per base parameter name, with everything needed to write and reproduce it."""

    method: str
    config: dict[str, Any]
    inputs: list[InputRecord]
    base: str | None
    is_lowrank: bool
    versions: dict[str, str]
    shapes: dict[str, tuple[int, int]]  # in merge order
    numerics: Numerics = field(default_factory=Numerics)
    targets: list[str] | None = None
    fan_in_fan_out: bool = False
    lora_meta: dict[str, Any] = field(default_factory=dict)
    base_model: BaseModel | None = field(default=None, repr=False)
    output: Any = None  # the writers.WriteReport once written
    _deltas: dict[str, Delta] | None = field(default=None, repr=False)
    _pending: Iterator[tuple[str, Delta]] | None = field(default=None, repr=False)
    # The merge's own progress bar, read when a streamed merge starts: a writer that shows one bar for the
    # whole output (the full checkpoint's) turns it off first.
    bar: "MergeBar" = field(default_factory=lambda: MergeBar(False), repr=False)

    @property
    def keys(self) -> list[str]:
        return list(self.shapes)

    def items(self) -> Iterator[tuple[str, Delta]]:
        """(name, Δ) in merge order. A streamed result computes them now and can be read once."""
        if self._deltas is not None:
            yield from self._deltas.items()
            return
        if self._pending is None:
            raise ValueError("this streamed merge result was already consumed (written out); "
                             "merge again, or merge without streaming to keep the deltas")
        pending, self._pending = self._pending, None
        yield from pending

    @property
    def deltas(self) -> dict[str, Delta]:
        if self._deltas is None:
            self._deltas = dict(self.items())
        return self._deltas

    def apply_to(self, model: torch.nn.Module) -> "AppliedMerge":
        """Add Δ into ``model``'s weights in place (W ← cast(float32(W) + Δ)); the handle restores
        the exact original weights (kept on the CPU meanwhile).

        A streamed result is consumed here matrix by matrix, so a dense merge of a large model
        never holds more than one merged matrix besides the model.
        """
        originals: list[tuple[torch.nn.Parameter, Tensor]] = []
        try:
            with torch.no_grad():
                for key, delta in self.items():
                    param = find_parameter(model, key)
                    if tuple(param.shape) != tuple(self.shapes[key]):
                        raise ValueError(f"model parameter {key} has shape {tuple(param.shape)}; "
                                         f"the merge is for {tuple(self.shapes[key])}")
                    originals.append((param, param.detach().to("cpu", copy=True)))
                    update = _dense_on(delta, param.device)
                    del delta
                    param.copy_((param.to(COMPUTE_DTYPE) + update).to(param.dtype))
        except BaseException:
            AppliedMerge(originals).restore()
            raise
        return AppliedMerge(originals)


class AppliedMerge:
    """Handle returned by ``MergeResult.apply_to``: ``restore()`` (or leaving a ``with`` block) puts
    the original weights back."""

    def __init__(self, originals: list[tuple[torch.nn.Parameter, Tensor]]):
        self._originals = originals

    def restore(self) -> None:
        with torch.no_grad():
            for param, original in self._originals:
                param.copy_(original.to(param.device))
        self._originals = []

    def __enter__(self) -> "AppliedMerge":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@dataclass
class MergeBar:
    on: bool


def find_parameter(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    """``model.get_parameter`` that tolerates a missing or extra base-model prefix."""
    prefix = getattr(model, "base_model_prefix", "")
    candidates = [name, f"{prefix}.{name}" if prefix else None, name.partition(".")[2]]
    for candidate in filter(None, candidates):
        try:
            return model.get_parameter(candidate)
        except AttributeError:
            continue
    raise ValueError(f"the model ({type(model).__name__}) has no parameter {name!r}")


def _dense_on(delta: Delta, device: torch.device) -> Tensor:
    if isinstance(delta, LowRank):
        return delta.B.to(device, COMPUTE_DTYPE) @ delta.A.to(device, COMPUTE_DTYPE)
    return delta.to(device, COMPUTE_DTYPE)


def make_method(method: MethodSpec, params: Mapping[str, Any] | None = None) -> MergeMethod:
    """A method instance from a registered name, a ``file.py:Class`` spec, a class, or an instance."""
    if isinstance(method, MergeMethod):
        if params:
            raise ValueError("pass parameters either to the method instance or as params, not both")
        return method
    cls = get_method(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
        raise ValueError(f"method must be a name, a MergeMethod subclass or instance; got {method!r}")
    return cls(**dict(params or {}))


def normalize_targets(targets: str | Sequence[str] | None) -> list[str] | None:
    """``"q,v"``, ``["q", "v"]`` or ``["q,v"]`` → ``["q", "v"]``; None or empty → None."""
    if targets is None:
        return None
    items = [targets] if isinstance(targets, str) else list(targets)
    out = [t.strip() for item in items for t in str(item).split(",") if t.strip()]
    return out or None


def check_targets(targets: list[str] | None, inputs: list) -> None:
    """ValueError naming each of ``targets`` that matches no matrix of any input (a typo would otherwise
    merge nothing, or nothing but what the other targets match)."""
    if not targets:
        return
    unmatched = [t for t in targets if not any(matches_targets(k, [t]) for s in inputs for k in s.shapes)]
    if unmatched:
        known = sorted({m for s in inputs for m in getattr(s, "targeted", ())}
                       | {module_of(k).rsplit(".", 1)[-1] for s in inputs for k in s.shapes})
        raise ValueError(f"--targets {' '.join(unmatched)}: matches no module of the inputs; expected module name "
                         f"suffixes they target ({', '.join(known) or 'none'})")


def versions() -> dict[str, str]:
    """Versions of the packages that shape a merge (module ``__version__`` when already imported:
    importlib.metadata scans every installed distribution and costs ~0.1 s per lookup)."""
    out = {"python": platform.python_version()}
    for package, module in (("merge-bench", "merge_bench"), ("torch", "torch"), ("transformers", "transformers"),
                            ("peft", "peft"), ("safetensors", "safetensors")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(getattr(loaded, "__version__", None), str):
            out[package] = loaded.__version__
            continue
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: leave torch's setting), restored afterwards.

    Why: factor-space merges run many small QRs/SVDs; on a shared, oversubscribed CPU torch's
    multi-threaded kernels wait on descheduled threads (measured on the 2-core dev box under load:
    tsv 2.2×, drm 1.3× faster with one thread). Torch's thread count is process-wide, hence the restore.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def merge(method: MethodSpec, adapters: Sequence[Union[str, Path]], *, params: Mapping[str, Any] | None = None,
          base: Union[str, Path, BaseModel, None] = None, numerics: Numerics = Numerics(),
          targets: str | Sequence[str] | None = None, stream: bool = False, progress: bool = False,
          threads: int | None = None, calibration: Sequence[Sequence[str]] | None = None) -> MergeResult:
    """Merge ``adapters`` (PEFT LoRA dirs and/or full checkpoints) with ``method``.

    Inputs are opened and validated now. Without ``stream`` the merge runs now and the result holds
    every Δ; with ``stream`` it runs while the result's ``items()`` are consumed (by a writer).
    ``threads`` caps torch's intra-op threads while inputs are read and the merge runs; a
    factor-space merge of LoRA inputs on the CPU instead merges that many matrices at once, with
    one intra-op thread each (at most MAX_WORKERS matrices; None: torch's thread count).
    ``calibration``: for a method that needs data (``data = "calibration"``, RegMean), one list of
    prompts per adapter, in order; their Grams are collected (or read from the cache) before the merge.
    """
    instance = make_method(method, params)
    targets = normalize_targets(targets)
    base_model = base if isinstance(base, BaseModel) or base is None else BaseModel(base)
    with torch_threads(threads):
        inputs = [open_input(a, base_model, targets) for a in adapters]
        check_targets(targets, inputs)
        the_plan = plan(inputs, base_model)
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-bench-hash")
    records = [InputRecord(s.spec, str(s.path), s.kind, hasher.submit(sha256_files, s.path, s.files))
               for s in the_plan.inputs]
    hasher.shutdown(wait=False)
    is_lowrank = bool(instance.lowrank) and all(s.kind == "lora" for s in the_plan.inputs)
    if instance.data == "calibration":
        if calibration is None or base_model is None:
            raise ValueError(f"method {instance.name!r} needs calibration data: pass the base model and one "
                             "prompt list per adapter (merge-bench merge --calibration BACKBONE:TASK or FILE.jsonl)")
        from .grams import calibration_grams

        instance.use_calibration(calibration_grams(base_model.path, the_plan.inputs, calibration, the_plan.keys,
                                                   device=str(numerics.device)))
    elif calibration is not None:
        raise ValueError(f"method {instance.name!r} takes no calibration data")
    bar = MergeBar(progress)
    result = MergeResult(
        method=instance.name if isinstance(method, (MergeMethod, type)) or ":" not in str(method) else str(method),
        config=dict(instance.config), inputs=records, base=None if base_model is None else base_model.spec,
        is_lowrank=is_lowrank, versions=versions(), shapes={k: the_plan.shapes[k] for k in the_plan.keys},
        numerics=numerics, targets=targets, fan_in_fan_out=the_plan.fan_in_fan_out,
        lora_meta=_lora_meta(the_plan), base_model=base_model,
        _pending=_run(instance, the_plan, numerics.device, is_lowrank, bar, threads), bar=bar,
    )
    if not stream:
        result.deltas  # noqa: B018 (runs the merge now)
    return result


def _lora_meta(the_plan: Plan) -> dict[str, Any]:
    """What the LoRA inputs agree on, for the merged adapter's config (None where they differ)."""
    configs = [s.config for s in the_plan.inputs if s.kind == "lora"]
    meta: dict[str, Any] = {}
    for key in ("task_type", "base_model_name_or_path"):
        values = {c.get(key) for c in configs}
        meta[key] = values.pop() if len(values) == 1 else None
    return meta


def module_stream(the_plan: Plan, device: torch.device):
    """The re-iterable ModuleStream over the plan: (key, one Δ per task) on ``device``."""

    def stream() -> Iterator[tuple[str, list[Delta]]]:
        for key in the_plan.keys:
            yield key, [the_plan.delta(t, key).to(device) for t in range(len(the_plan.inputs))]

    return stream


def _run(method: MergeMethod, the_plan: Plan, device: torch.device, expect_lowrank: bool,
         progress: MergeBar, threads: int | None) -> Iterator[tuple[str, Delta]]:
    # Factor-space merges of LoRA inputs are many small QR/SVD-sized problems on which torch's
    # intra-op threads barely help; merging `threads` matrices at once (at most MAX_WORKERS, which
    # then share the threads) is faster (measured on 2 cores, 32 Mistral-shape layers × 12 LoRAs:
    # iso_c 1.27×, tsv 1.35×, iso_cts 1.47×, drm 1.36×). Dense merges keep one matrix at a time:
    # their large elementwise kernels use the threads well, and two matrices in flight would double
    # the peak memory.
    with torch_threads(threads):
        workers = min(torch.get_num_threads(), MAX_WORKERS) if expect_lowrank and device.type == "cpu" else 1
        yield from _merge_all(method, the_plan, device, expect_lowrank, progress, workers)


def _merge_all(method: MergeMethod, the_plan: Plan, device: torch.device, expect_lowrank: bool,
               progress: MergeBar, workers: int) -> Iterator[tuple[str, Delta]]:
    stream = module_stream(the_plan, device)
    method.prepare(stream)

    def one(key: str, deltas: list[Delta]) -> Delta:
        return _checked(method.merge(deltas, key), key, the_plan.shapes[key], method.name, expect_lowrank)

    bar = tqdm(total=len(the_plan.keys), disable=not progress.on, unit="matrix", desc=f"merge {method.name}")
    try:
        if workers == 1:
            for key, deltas in stream():
                merged = one(key, deltas)
                del deltas  # free the N task vectors before the next matrix is loaded
                bar.update()
                yield key, merged
                del merged
            return
        # In order; one matrix more than `workers` in flight keeps them busy while this thread reads
        # the next task vectors and the consumer writes the last result.
        per_worker = max(1, torch.get_num_threads() // workers)
        with torch_threads(per_worker), ThreadPoolExecutor(workers, thread_name_prefix="merge-bench-merge") as pool:
            pending: deque[tuple[str, Future]] = deque()
            for key, deltas in stream():
                pending.append((key, pool.submit(one, key, deltas)))
                del deltas
                if len(pending) > workers:
                    done_key, future = pending.popleft()
                    bar.update()
                    yield done_key, future.result()
            while pending:
                done_key, future = pending.popleft()
                bar.update()
                yield done_key, future.result()
    finally:
        bar.close()


def _checked(merged: Any, key: str, shape: tuple[int, int], name: str, expect_lowrank: bool) -> Delta:
    if isinstance(merged, LowRank):
        merged = LowRank(merged.B.to("cpu", COMPUTE_DTYPE), merged.A.to("cpu", COMPUTE_DTYPE))
        parts = (merged.B, merged.A)
    elif isinstance(merged, Tensor):
        if expect_lowrank:
            raise ValueError(f"method {name!r} declares lowrank=True but returned a dense tensor for {key}")
        merged = merged.to("cpu", COMPUTE_DTYPE)
        parts = (merged,)
    else:
        raise ValueError(f"method {name!r} returned {type(merged).__name__} for {key}; expected a LowRank or a tensor")
    if tuple(merged.shape) != tuple(shape):
        raise ValueError(f"method {name!r} returned shape {tuple(merged.shape)} for {key}; expected {tuple(shape)}")
    if not all(all_finite(p) for p in parts):
        raise ValueError(f"method {name!r} produced NaN/Inf for {key}")
    return merged


__all__ = ["MergeResult", "AppliedMerge", "InputRecord", "merge", "make_method", "module_stream"]
