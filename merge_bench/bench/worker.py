"""What an executor runs: a ``Work`` (one model variant and the tasks to evaluate it on, with the cache key of
every result) and the ``Worker`` that evaluates it, holding one evaluator (one loaded base model).

Works carry plain data only (paths, dicts, the method's spec), so a Ray actor on another machine can run them
against a shared filesystem: the driver hashes the inputs and computes every cache key, the worker merges,
evaluates and writes each finished (variant, task) into the content-hash cache, and the driver reads the cache.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..backbones import Backbone
from .cache import ResultCache
from .plan import Runtime


@dataclass(frozen=True)
class EvaluatorSpec:
    """What builds an evaluator. The backbone travels without its ``local_base`` builder: the driver has
    already built or resolved the base into ``base_dir``."""

    backbone: Backbone
    base_dir: Path
    runtime: Runtime
    limit: int | None = None
    seed: int = 42
    batch_size: int | None = None
    verbose: bool = False


@dataclass(frozen=True)
class MergeInput:
    """A merge of the task set's inputs, as ``merging.engine.merge`` takes it."""

    spec: str  # a method name or "file.py:Class"
    params: dict[str, Any]
    adapters: tuple[Path, ...]
    base: Path
    targets: tuple[str, ...] | None  # full checkpoints contribute their declared targets only (flan: q, v)
    calibration: tuple[tuple[str, ...], ...] | None  # one prompt list per adapter, for data-using methods
    lowrank: bool  # the method merges LoRA inputs in factor space


@dataclass(frozen=True)
class Work:
    """One variant (the pretrained base, one task's adapter, or a merge) on ``tasks``, each result cached
    under the matching key of ``keys``."""

    name: str  # "pretrained", "lora:<task>", "merged:<method key>": for the progress bar
    tasks: tuple[str, ...]  # names the evaluator knows: a task, or its validation variant
    keys: tuple[dict, ...]
    adapter: Path | None = None  # the LoRA row: the task's adapter ...
    adapter_kind: str = "lora"  # ... a PEFT LoRA, or a full checkpoint (θ_0 + τ on its targets)
    adapter_targets: tuple[str, ...] | None = None
    merge: MergeInput | None = None
    save_to: Path | None = None  # --save-merged: write the merge here

    @property
    def dense(self) -> bool:
        """Swapped into the weights (never a LoRA request): dense merges and full-checkpoint rows. A vLLM
        evaluator takes these one at a time, after the low-rank ones."""
        if self.merge is not None:
            return not self.merge.lowrank
        return self.adapter is not None and self.adapter_kind == "full"


def make_evaluator(spec: EvaluatorSpec):
    from ..evaluation.tasks import task_manager

    rt = spec.runtime
    manager = task_manager(spec.backbone.task_dirs)
    common = dict(device=rt.device, dtype=rt.dtype, limit=spec.limit, seed=spec.seed, verbose=spec.verbose)
    if rt.backend == "vllm":
        from ..evaluation.vllm_backend import VLLMEvaluator

        return VLLMEvaluator(spec.backbone, spec.base_dir, manager, **common)
    from ..evaluation.hf_backend import HFEvaluator

    return HFEvaluator(spec.backbone, spec.base_dir, manager, batch_size=spec.batch_size, **common)


def merge_variant(merge: MergeInput, device: str):
    """The merge, its maths on ``device`` in float32."""
    from ..merging.engine import merge as run_merge
    from ..merging.numerics import Numerics

    calibration = [list(p) for p in merge.calibration] if merge.calibration is not None else None
    return run_merge(merge.spec, list(merge.adapters), params=merge.params, base=merge.base,
                     targets=list(merge.targets) if merge.targets else None,
                     numerics=Numerics.from_names(device, "float32"), calibration=calibration)


def merged_sha256(result) -> str:
    """A hash of the merged deltas themselves (factors for low-rank results), in float32."""
    import hashlib

    import torch

    from ..merging.delta import LowRank

    h = hashlib.sha256()
    for key, delta in sorted(result.deltas.items()):
        h.update(key.encode())
        for t in (delta.B, delta.A) if isinstance(delta, LowRank) else (delta,):
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Worker:
    """One evaluator, built on first use, and the result cache it writes into."""

    spec: EvaluatorSpec
    cache_root: Path
    threads: int | None = None  # torch's intra-op threads in this process (a CPU worker's share)
    _evaluator: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        self.cache = ResultCache(self.cache_root)

    @property
    def evaluator(self):
        if self._evaluator is None:
            self._evaluator = make_evaluator(self.spec)
        return self._evaluator

    def run(self, works: list[Work], on_task: Callable[[], None] | None = None) -> list[tuple[int, float]]:
        """Evaluate every work, caching each (variant, task) as soon as it is scored. Where the evaluator
        scores several adapters in one pass (vLLM's multi-LoRA batches), the low-rank works go together.
        Returns each work's (items, seconds of merging and evaluating), in order."""
        if len(works) > 1 and hasattr(self.evaluator, "evaluate_adapters"):
            return self._run_batched(works, on_task)
        return [self._run_one(w, on_task) for w in works]

    def _merge(self, work: Work):
        result = merge_variant(work.merge, self.spec.runtime.device)
        if work.save_to is not None:
            from ..merging.writers import write

            write(result, work.save_to, overwrite=True)
        return result, {"merged_sha256": merged_sha256(result)}

    def _put(self, work: Work, task: str, score, extra: dict) -> None:
        key = work.keys[work.tasks.index(task)]
        if score.samples:  # before the result: a cached result always has its samples beside it
            self.cache.put_samples(key, score.samples)
        self.cache.put(key, {"score": score.score, "metric": score.metric, "n": score.n,
                             "per_item": score.per_item, **extra})

    def _run_one(self, work: Work, on_task=None, merged=None) -> tuple[int, float]:
        start = time.perf_counter()
        ev = self.evaluator
        if work.merge is not None:
            result, extra = merged or self._merge(work)
            context = ev.merged(result)
        elif work.adapter is not None:
            extra = {}
            context = ev.lora(work.adapter, kind=work.adapter_kind, targets=work.adapter_targets)
        else:
            context, extra = nullcontext(), {}
        items = 0
        with context:
            for t in work.tasks:  # one task at a time: each finished task is cached at once
                s = ev.evaluate([t])[t]
                items += s.n
                self._put(work, t, s, extra)
                if on_task is not None:
                    on_task()
        return items, time.perf_counter() - start

    def _run_batched(self, works: list[Work], on_task=None) -> list[tuple[int, float]]:
        """Low-rank variants as one multi-adapter evaluation, its time shared by their items; the dense ones
        after it, one at a time."""
        from ..merging.writers import write

        ev = self.evaluator
        stats: dict[int, tuple[int, float]] = {}
        requests, batched, dense = [], [], []
        tmp = Path(tempfile.mkdtemp(prefix="merge-bench-adapters-"))
        try:
            start = time.perf_counter()
            for i, work in enumerate(works):
                if work.dense:  # merged when its turn comes: one dense merge in memory at a time
                    dense.append((i, None))
                elif work.merge is not None:
                    result, extra = self._merge(work)
                    if not ev.serves_as_lora(result):  # a rank above what the engine serves
                        dense.append((i, (result, extra)))
                        continue
                    write(result, tmp / str(i), format="peft")
                    requests.append((tmp / str(i), list(work.tasks)))
                    batched.append((i, extra))
                else:
                    requests.append((work.adapter, list(work.tasks)))
                    batched.append((i, {}))
            if requests:
                scores = ev.evaluate_adapters(requests)
                counts = {i: sum(by_task[t].n for t in works[i].tasks) for (i, _), by_task in zip(batched, scores)}
                share = (time.perf_counter() - start) / max(1, sum(counts.values()))
                for (i, extra), by_task in zip(batched, scores):
                    for t in works[i].tasks:
                        self._put(works[i], t, by_task[t], extra)
                        if on_task is not None:
                            on_task()
                    stats[i] = (counts[i], counts[i] * share)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for i, merged in dense:
            stats[i] = self._run_one(works[i], on_task, merged)
        return [stats[i] for i in range(len(works))]
