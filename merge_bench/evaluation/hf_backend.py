"""The HF evaluator: lm-eval's ``hf`` model over one base model kept in memory.

An evaluator holds the base model and switches it between variants in place: the pretrained
weights, one PEFT adapter (the LoRA row), or a merged delta added into the weights (merged rows).
No multi-GB checkpoint is written between methods. ``vllm_backend`` is the same interface on vLLM.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ..backbones import Backbone
from .harness import TaskScore, run_lm_eval


class HFEvaluator:
    """lm-eval's HF model over a base kept in memory; variants are swapped in place."""

    backend = "hf"

    def __init__(self, backbone: Backbone, base_dir: Path, manager, *, device: str = "cpu",
                 batch_size: int | None = None, limit: int | None = None, seed: int = 42) -> None:
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from ..merging.numerics import parse_dtype

        auto = AutoModelForSeq2SeqLM if backbone.seq2seq else AutoModelForCausalLM
        dtype = parse_dtype(backbone.eval.dtype) if device != "cpu" else torch.float32
        self.model = auto.from_pretrained(base_dir, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        self.lm = HFLM(pretrained=self.model, tokenizer=tokenizer, device=device,
                       batch_size=batch_size or backbone.eval.batch_size, max_length=backbone.eval.max_length,
                       backend="seq2seq" if backbone.seq2seq else "causal")
        self.backbone, self.manager, self.limit, self.seed = backbone, manager, limit, seed

    @contextmanager
    def lora(self, adapter_dir: Path) -> Iterator[None]:
        """The base with one PEFT adapter injected (PEFT computes it, independently of our engine)."""
        from peft import PeftModel

        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5: noise in every run
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = PeftModel.from_pretrained(self.model, str(adapter_dir))
        try:
            yield
        finally:
            peft_model.unload()  # removes the LoRA layers from self.model in place

    @contextmanager
    def merged(self, result) -> Iterator[None]:
        """The base with a merged delta added into its weights, restored afterwards."""
        handle = result.apply_to(self.model)
        try:
            yield
        finally:
            handle.restore()

    def evaluate(self, shorts: list[str]) -> dict[str, TaskScore]:
        with torch.inference_mode():
            return run_lm_eval(self.lm, self.backbone, shorts, self.manager, self.limit, self.seed)
