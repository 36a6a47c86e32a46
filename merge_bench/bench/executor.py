"""Executors: where a run's works are evaluated. ``sequential`` runs them in this process with one evaluator
(one loaded base); ``ray`` (``ray_executor.py``) fans them out over Ray actors that each hold one.

Either way every finished (variant, task) lands in the content-hash result cache, the single source of truth
the driver assembles its tables from, so the executors give the same record and a rerun of a killed driver
skips whatever any worker finished.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from .worker import EvaluatorSpec, Work, Worker

# On vLLM, this many low-rank variants share one multi-LoRA pass (a batch is cached when it finishes, so a
# killed run loses at most one batch).
LORA_BATCH = 16

Progress = Callable[[int], None]  # advance the bar by this many (variant, task) results


Stats = tuple[int, float]  # a work's (items evaluated, seconds of merging and evaluating)


class Executor(Protocol):
    def describe(self) -> dict: ...

    def run(self, works: list[Work], progress: Progress) -> list[Stats]:
        """Evaluate every work into the result cache; each work's stats, in order."""

    def close(self) -> None: ...


def batches(works: list[Work], backend: str) -> list[list[int]]:
    """Dispatch units (indices into ``works``), dense works last: on vLLM each is swapped into the engine's
    weights, after up to ``LORA_BATCH`` low-rank works have shared one multi-LoRA pass; on hf each work goes
    alone. A merged variant is merged once, by the worker that evaluates all of its tasks."""
    lowrank = [i for i, w in enumerate(works) if not w.dense]
    dense = [[i] for i, w in enumerate(works) if w.dense]
    if backend != "vllm":
        return [[i] for i in lowrank] + dense
    return [lowrank[i:i + LORA_BATCH] for i in range(0, len(lowrank), LORA_BATCH)] + dense


class SequentialExecutor:
    """Today's loop: one worker in this process, its evaluator built on the first work."""

    def __init__(self, spec: EvaluatorSpec, cache_root: Path) -> None:
        self.worker, self.backend = Worker(spec, cache_root), spec.runtime.backend

    def describe(self) -> dict:
        return {"name": "sequential", "workers": 1}

    def run(self, works: list[Work], progress: Progress) -> list[Stats]:
        out: list[Stats] = [(0, 0.0)] * len(works)
        for batch in batches(works, self.backend):
            for i, stats in zip(batch, self.worker.run([works[i] for i in batch], on_task=lambda: progress(1))):
                out[i] = stats
        return out

    def close(self) -> None:
        pass
