"""Input Grams for data-requiring methods (RegMean): G = Σ x xᵀ of each targeted linear layer's inputs in
model t (the base with task t's update merged in), over task t's calibration prompts.

Collection is one forward pass per prompt (batch 1, so no padding enters a Gram) through a Hugging Face
model, with forward hooks on the targeted layers. Layers that read the same input tensor (q, k and v; gate
and up) share one Gram, stored once. Each task's Grams go to one safetensors file in the cache, keyed by the
base, the input, the prompts and the layer keys, so a rerun (another method parameter, another task set
with this task) reads them back; ``Grams`` opens the files lazily and returns one layer at a time, so a merge
never holds more than one layer's Grams of every task.

Decisions: Grams accumulate in float64 on the collection device. A seq2seq model (T5) is fed the prompt to
its encoder and the decoder start token to its decoder, so decoder layers see one token per prompt. The
collection itself holds one task's Grams of every layer (at Mistral-7B size about 31 GB in float64 with
the 14336-wide down_proj input, so collect on a GPU or with fewer targets).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..io.console import no_library_bars
from ..io.files import atomic_write_bytes, cache_root, content_hash, dir_sha256, prompts_sha256, sha256_files
from .numerics import SVD_DTYPE

VERSION = 1  # bump when what a Gram file holds changes


class Grams:
    """One Gram file per task; ``get(task, key)`` reads that layer's Gram (in×in) on demand."""

    def __init__(self, files: Sequence[Path]):
        from safetensors import safe_open

        self.files = [Path(f) for f in files]
        self._handles = [safe_open(str(f), framework="pt") for f in self.files]
        self._names = [json.loads(h.metadata()["keys"]) for h in self._handles]

    def get(self, task: int, key: str) -> Tensor:
        names = self._names[task]
        if key not in names:
            raise ValueError(f"{self.files[task]}: no Gram for {key} (it holds {len(names)} layers)")
        return self._handles[task].get_tensor(names[key])


def gram_file(base_sha256: str, input_dir: Path, input_files: list[Path], prompts: Sequence[str],
              keys: Sequence[str], cache: Path | None = None) -> Path:
    """Where task ``input_dir``'s Grams live in the cache (content-addressed)."""
    key = {"version": VERSION, "base": base_sha256, "input": sha256_files(input_dir, input_files)[0],
           "prompts": prompts_sha256(prompts), "keys": sorted(keys)}
    return (cache or cache_root() / "grams") / f"{content_hash(key)}.safetensors"


def collect(model: torch.nn.Module, tokenizer, prompts: Sequence[str], keys: Sequence[str], *,
            seq2seq: bool = False, max_length: int = 1024) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Grams of the layers named by ``keys`` (parameter names ``<module>.weight``) over ``prompts``.

    Returns (distinct Grams by stored name, layer key → stored name)."""
    modules = dict(model.named_modules())
    wanted = {}
    for key in keys:
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        module = modules.get(name) or modules.get(name.partition(".")[2])
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(f"Gram collection: {key} is not a linear layer of {type(model).__name__}")
        wanted[key] = module
    grams: dict[str, Tensor] = {}
    stored: dict[str, str] = {}
    # The inputs seen in the current forward, kept alive until it ends: an id alone could be reused by a
    # later tensor once an earlier one is freed.
    seen: dict[int, tuple[Tensor, str]] = {}

    def hook(key: str):
        def fn(module, args, output):
            x = args[0]
            if id(x) in seen and seen[id(x)][0] is x:  # another layer of this input (q after k): one Gram
                stored.setdefault(key, seen[id(x)][1])
                return
            name = stored.setdefault(key, key)
            seen[id(x)] = (x, name)
            flat = x.reshape(-1, x.shape[-1]).to(SVD_DTYPE)
            g = flat.T @ flat
            grams[name] = g if name not in grams else grams[name] + g
        return fn

    handles = [m.register_forward_hook(hook(k)) for k, m in wanted.items()]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for text in prompts:
                seen.clear()
                # as lm-eval encodes a prompt: special tokens for seq2seq (T5's </s>), none for decoders
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length,
                                add_special_tokens=seq2seq)
                ids = {k: v.to(device) for k, v in ids.items()}
                if seq2seq:
                    start = torch.tensor([[model.config.decoder_start_token_id]], device=device)
                    model(**ids, decoder_input_ids=start)
                else:
                    model(**ids)
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(keys) - set(stored))
    if missing:
        raise ValueError(f"Gram collection: the forward pass never reached {missing[:3]}")
    return grams, stored


def save(path: Path, grams: dict[str, Tensor], stored: dict[str, str]) -> Path:
    from safetensors.torch import save

    data = save({k: v.contiguous().cpu() for k, v in grams.items()}, metadata={"keys": json.dumps(stored)})
    atomic_write_bytes(Path(path), data)
    return Path(path)


def load_task_model(base_dir: Path, input_dir: Path, kind: str, seq2seq: bool, device: str):
    """Model t for Gram collection: the base with task t's LoRA merged in, or the full checkpoint itself."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    # The run's one bar stays alone: no loading bars, no notices. PEFT calls an API transformers 5 deprecated
    # and, merging into T5, says its embeddings are untied (flan-t5's are: that is what it loaded).
    verbosity = hf_logging.get_verbosity()
    with no_library_bars(), warnings.catch_warnings():
        hf_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*embeddings are no longer tied.*", category=UserWarning)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        try:
            if kind == "full":
                return auto.from_pretrained(input_dir, dtype=torch.float32).to(device).eval(), tokenizer
            model = auto.from_pretrained(base_dir, dtype=torch.float32)
            model = PeftModel.from_pretrained(model, str(input_dir)).merge_and_unload()
        finally:
            hf_logging.set_verbosity(verbosity)
    return model.to(device).eval(), tokenizer


def calibration_grams(base_dir: Path, inputs: Sequence, prompts: Sequence[Sequence[str]], keys: Sequence[str],
                      device: str = "cpu", cache: Path | None = None) -> Grams:
    """The Grams of every input (``adapters.TaskInput``) over its own prompts, collected where not cached."""
    if len(prompts) != len(inputs):
        raise ValueError(f"calibration: {len(prompts)} prompt set(s) for {len(inputs)} input(s); give one per input")
    config = json.loads((Path(base_dir) / "config.json").read_text())
    seq2seq = bool(config.get("is_encoder_decoder"))
    files, base_sha = [], dir_sha256(Path(base_dir))  # hashed once: a 7B base is 14 GB
    for source, texts in zip(inputs, prompts):
        if not texts:
            raise ValueError(f"calibration: no prompts for {source.path}")
        path = gram_file(base_sha, source.path, source.files, texts, keys, cache)
        if not path.is_file():
            model, tokenizer = load_task_model(base_dir, source.path, source.kind, seq2seq, device)
            save(path, *collect(model, tokenizer, texts, keys, seq2seq=seq2seq))
            del model
        files.append(path)
    return Grams(files)
