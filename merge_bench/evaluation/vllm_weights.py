"""Dense variants in the running vLLM engine's weights, in place, and the base's weights put back.

This is the weight-update path of RLHF frameworks: the engine's workers load tensors given by their
Hugging Face checkpoint names through vLLM's ``reload_weights`` (the model's ``load_weights``, which
knows the fused qkv and gate_up layouts, then the layer's post-load processing, e.g. the CPU's weight
packing), instead of a second engine being started on a written checkpoint.

Decisions:
- The merged tensors go to the workers as a small safetensors file named in a ``collective_rpc`` call:
  plain strings reach a worker in another process (the default on a GPU) without vLLM's pickle
  serialization, and no worker holds more than the tensor it is loading.
- vLLM re-processes a layer once all of it has been loaded, so every checkpoint tensor of a touched
  engine layer is loaded (q, k and v together, biases too): the merged ones from the file, the others
  from the base checkpoint.
- Names: a merge's keys map to checkpoint names as for a written full checkpoint (``BaseModel.file_key``),
  so the engine sees what a second engine would load; merged weight = cast(float32(W₀) + Δ) to the
  engine's dtype.
- Restoring reads the touched tensors from the base checkpoint again, and the prefix cache is reset
  after every change (cached KV computed with other weights would be wrong).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ..io.tensors import SafetensorsStreamWriter, TensorStore
from ..merging.adapters import BaseModel, natural_key
from ..merging.writers import merged_weight

# vLLM's worker_extension_cls: the class whose methods every worker gains.
WORKER_EXTENSION = "merge_bench.evaluation.vllm_weights.WeightLoader"
# Loggers that report every layer a reload left alone: expected here, where only touched layers load.
_PARTIAL_RELOAD_LOGGERS = ("vllm.model_executor.model_loader.reload.layerwise",
                           "vllm.model_executor.model_loader.reload.inplace")


class WeightLoader:
    """Mixed into each vLLM worker; called by name through ``LLM.collective_rpc``."""

    def merge_bench_packed_modules(self) -> dict[str, list[str]]:
        """The model's fused layers: engine layer name → the checkpoint modules loaded into it."""
        mapping = getattr(self.get_model(), "packed_modules_mapping", None) or {}
        return {fused: list(parts) for fused, parts in mapping.items()}

    def merge_bench_load(self, entries: list[tuple[str, str]]) -> None:
        """Load each (checkpoint directory, tensor name) into the running model, in that order."""
        stores: dict[str, TensorStore] = {}

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for directory, name in entries:
                if directory not in stores:
                    stores[directory] = TensorStore.open(Path(directory))
                yield name, stores[directory].get(name)

        loggers = [logging.getLogger(n) for n in _PARTIAL_RELOAD_LOGGERS]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class InPlaceWeights:
    """Swaps dense variants into a running engine (started with ``worker_extension_cls=WORKER_EXTENSION``)."""

    def __init__(self, llm, base_dir: Path, dtype: torch.dtype) -> None:
        self.llm, self.base, self.dtype = llm, BaseModel(base_dir), dtype
        self._modules: dict[str, list[str]] | None = None  # checkpoint module → its tensor names
        self._siblings: dict[str, list[str]] = {}  # checkpoint module leaf → the leaves of its engine layer

    @contextmanager
    def swapped(self, result) -> Iterator[None]:
        """The engine holds base + Δ (every Δ of ``result``) while the block runs; the base afterwards."""
        scratch = Path(tempfile.mkdtemp(prefix="merge-bench-dense-"))
        touched: list[str] = []
        try:
            merged = self._write_merged(result, scratch)
            touched = self._layer_tensors(merged)
            self._load([(str(scratch if n in merged else self.base.path), n) for n in touched])
            yield
        finally:
            try:
                if touched:
                    self._load([(str(self.base.path), n) for n in touched])
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _write_merged(self, result, out: Path) -> set[str]:
        """cast(float32(W₀) + Δ) per merged matrix, under its checkpoint name, into ``out``; the names."""
        names = {}
        for key, shape in result.shapes.items():
            name = self.base.file_key(key)
            if name is None:
                raise ValueError(f"base model {self.base.path} has no parameter {key!r} "
                                 "(is the merge for another base?)")
            if tuple(self.base.store.shape(name)) != tuple(shape):
                raise ValueError(f"base parameter {key} has shape {tuple(self.base.store.shape(name))}; "
                                 f"the merge is for {tuple(shape)}")
            names[key] = name
        entries = [(names[key], self.dtype, tuple(shape)) for key, shape in result.shapes.items()]
        with SafetensorsStreamWriter(out / "model.safetensors", entries) as writer:
            for key, delta in result.items():  # one merged matrix in memory at a time
                w = merged_weight(self.base, key, delta)
                del delta
                writer.write(names[key], w.to(self.dtype))
        return set(names.values())

    def _layer_tensors(self, names: set[str]) -> list[str]:
        """Every checkpoint tensor of the engine layers that ``names`` load into, layer by layer."""
        if self._modules is None:
            self._modules = {}
            for name in self.base.store.keys():
                self._modules.setdefault(name.rpartition(".")[0], []).append(name)
            fused = self.llm.collective_rpc("merge_bench_packed_modules")[0]
            self._siblings = {part: parts for parts in fused.values() for part in parts}
        modules = set()
        for name in names:
            parent, _, leaf = name.rpartition(".")[0].rpartition(".")
            modules.update(f"{parent}.{part}" if parent else part for part in self._siblings.get(leaf, [leaf]))
        return sorted((n for m in modules for n in self._modules.get(m, [])), key=natural_key)

    def _load(self, entries: list[tuple[str, str]]) -> None:
        self.llm.collective_rpc("merge_bench_load", args=(entries,))
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight change (requests were running)")
