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
from unittest import mock

import torch
from lm_eval.models.huggingface import HFLM

from ..backbones import Backbone
from .harness import TaskScore, run_lm_eval
from .quiet import quiet


class NewTokensHFLM(HFLM):
    """lm-eval's HFLM, with seq2seq generation capped at max_gen_toks new tokens and the STAR reference's
    tokenization of long and chat inputs.

    lm-eval passes ``max_length = len(prompt) + max_gen_toks`` to ``generate``; for an encoder-decoder
    that bounds the *decoder*, so a T5 that emits no ``</s>`` wrote up to len(prompt) + 10 tokens where
    the protocol allows 10 (more text gives label matching more chances to hit).

    Encoder inputs over ``max_length`` keep their start: the tokenizer's own truncation, which for T5 keeps
    the first max_length − 1 tokens and ``</s>``, as the reference's ``truncation=True`` call does (lm-eval
    keeps the last max_length tokens, cutting the start of a long imdb review instead of the instruction
    at its end). ``double_bos`` (``--protocol reference``): a chat string that already starts with BOS is
    tokenized with the tokenizer's BOS added again, as the reference's ``tokenizer(chat_string)`` does;
    by default lm-eval adds none to such a string, so the model sees the one BOS it was trained with.
    """

    double_bos = False

    def tok_batch_encode(self, strings: list[str], padding_side: str = "left", left_truncate_len: int | None = None,
                         truncation: bool = False):
        if self.backend == "causal" and not self.double_bos:
            return super().tok_batch_encode(strings, padding_side, left_truncate_len, truncation)
        old_side, self.tokenizer.padding_side = self.tokenizer.padding_side, padding_side
        try:
            if self.backend == "seq2seq":
                encoding = self.tokenizer(strings, truncation=True, max_length=self.max_length, padding="longest",
                                          return_tensors="pt")
            else:
                encoding = self.tokenizer(strings, add_special_tokens=True, padding="longest", return_tensors="pt")
                if left_truncate_len:
                    encoding = {k: v[:, -left_truncate_len:] for k, v in encoding.items()}
        finally:
            self.tokenizer.padding_side = old_side
        return encoding["input_ids"], encoding["attention_mask"]

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        if self.backend == "seq2seq":  # the decoder's start token plus max_gen_toks new ones
            max_length = max_length - context.shape[1] + 1
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


class HFEvaluator:
    """lm-eval's HF model over a base kept in memory; variants are swapped in place."""

    backend = "hf"

    def __init__(self, backbone: Backbone, base_dir: Path, manager, *, device: str = "cpu", dtype: str = "float32",
                 batch_size: int | None = None, limit: int | None = None, seed: int = 42,
                 verbose: bool = False) -> None:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from ..merging.numerics import parse_dtype

        auto = AutoModelForSeq2SeqLM if backbone.seq2seq else AutoModelForCausalLM
        with quiet(verbose):
            self.model = auto.from_pretrained(base_dir, dtype=parse_dtype(dtype)).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(base_dir)
        # HFLM re-ties the loaded model's weights. transformers 5's T5Config forces tie_word_embeddings=True,
        # so that would overwrite flan-t5's own lm_head (T5 v1.1 unties it; from_pretrained keeps it
        # "NOT tied") with the input embeddings. from_pretrained has tied whatever the checkpoint ties.
        with quiet(verbose), mock.patch.object(self.model, "tie_weights"):
            self.lm = NewTokensHFLM(pretrained=self.model, tokenizer=tokenizer, device=device,
                           batch_size=batch_size or backbone.eval.batch_size, max_length=backbone.eval.max_length,
                           backend="seq2seq" if backbone.seq2seq else "causal")
        self.lm.double_bos = backbone.protocol == "reference"
        self.backbone, self.base_dir, self.manager = backbone, base_dir, manager
        self.device, self.limit, self.seed, self.verbose = device, limit, seed, verbose

    @contextmanager
    def lora(self, adapter_dir: Path, kind: str = "lora", targets: tuple[str, ...] | None = None) -> Iterator[None]:
        """The base with one task's adapter: a PEFT LoRA injected by PEFT (independently of our engine), or
        for a full fine-tuned checkpoint θ_0 + τ on its targeted matrices, the same τ every merge reads."""
        if kind == "full":
            from ..merging.api import task_vector

            with self.merged(task_vector(adapter_dir, base=self.base_dir, targets=targets, device=self.device)):
                yield
            return
        from peft import PeftModel

        with warnings.catch_warnings(), quiet(self.verbose):  # PEFT calls an API deprecated in transformers v5
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
            return run_lm_eval(self.lm, self.backbone, shorts, self.manager, self.limit, self.seed, self.verbose)
