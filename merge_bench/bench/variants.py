"""Switching one evaluator between a run's model variants, and evaluating a variant into the result cache.

Shared by the run (``run._evaluate``) and the tuned track's search (``tune``). A variant is the pretrained
base, one task's LoRA, or a merge computed in memory and added into the loaded base's weights.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Job
    from .run import Prepared


def evaluate_job(prep: "Prepared", evaluator, job: "Job", tasks: list[str], on_task=None) -> tuple[int, float]:
    """Evaluate ``job``'s variant on ``tasks`` (names the evaluator knows: a task, or its validation variant)
    and cache each result as soon as it is done. Returns (items, seconds of evaluation)."""
    items, seconds = 0, 0.0
    context, extra = variant_context(prep, evaluator, job)
    with context:
        for t in tasks:  # one task at a time: each finished task is cached at once
            start = time.perf_counter()
            s = evaluator.evaluate([t])[t]
            seconds += time.perf_counter() - start
            items += s.n
            prep.cache.put(prep.key(job.variant, t), {"score": s.score, "metric": s.metric, "n": s.n,
                                                      "per_item": s.per_item, **extra})
            if on_task is not None:
                on_task()
    return items, seconds


def variant_context(prep: "Prepared", evaluator, job: "Job"):
    """The context that switches the evaluator to ``job``'s model, and what its results also record."""
    kind = job.variant["kind"]
    if kind == "pretrained":
        return nullcontext(), {}
    if kind == "lora":
        ref = prep.bb.adapters[job.tasks[0]]
        return evaluator.lora(prep.adapter_dirs[job.tasks[0]], kind=ref.kind, targets=ref.targets), {}
    result = merge_variant(job.method, prep)
    if prep.cfg.save_merged:
        from ..merging.writers import write

        write(result, Path(prep.cfg.out) / "merged" / job.method.key, overwrite=True)
    return evaluator.merged(result), {"merged_sha256": merged_sha256(result)}


def make_evaluator(prep: "Prepared"):
    cfg, rt = prep.cfg, prep.runtime
    common = dict(device=rt.device, dtype=rt.dtype, limit=cfg.limit, seed=cfg.seed, verbose=cfg.verbose)
    if rt.backend == "vllm":
        from ..evaluation.vllm_backend import VLLMEvaluator

        return VLLMEvaluator(prep.bb, prep.base_dir, prep.manager, **common)
    from ..evaluation.hf_backend import HFEvaluator

    return HFEvaluator(prep.bb, prep.base_dir, prep.manager, batch_size=cfg.batch_size, **common)


def merge_variant(method, prep: "Prepared"):
    """The merge of the task set's inputs, its maths on the run's device. Full checkpoints contribute their
    declared target matrices only (flan: q and v), as their LoRA row does."""
    from ..merging.engine import merge
    from ..merging.numerics import Numerics

    declared = sorted({t for task in prep.tasks for t in (prep.bb.adapters[task].targets or ())})
    calibration = [prep.calibration[t] for t in prep.tasks] if method.data == "calibration" else None
    return merge(method.spec, [prep.adapter_dirs[t] for t in prep.tasks], params=method.config, base=prep.base_dir,
                 targets=declared or None, numerics=Numerics.from_names(prep.runtime.device, "float32"),
                 calibration=calibration)


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
