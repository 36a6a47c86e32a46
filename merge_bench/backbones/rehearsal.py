"""Rehearsal mirrors: a stand-in for a real backbone's hub files, built locally in seconds.

``build_mirror("flan", out)`` writes ``out/<hub id>/`` for the backbone's base model and every adapter
id of the registry, so ``MERGE_BENCH_MODELS=out`` (with ``MERGE_BENCH_DATA_DIR=tests/fixtures``) runs the
real pipeline offline on CPU: same architecture classes, the real config keys and values except sizes
(2 layers, head dimension 128), the family's special tokens and chat template, and adapters shaped as
the published ones. The weights are random, so the scores mean nothing; the plumbing is what is rehearsed.

Per family (real values from the hub configs; only the sizes are ours):
- flan: T5ForConditionalGeneration (d_model 128, 2 heads of d_kv 128, d_ff 256, gated-gelu, its own
  lm_head), float32 as published, a SentencePiece-style tokenizer (<pad>=0, </s>=1, <unk>=2, 100 extra ids,
  vocab padded to a multiple of 128); PEFT LoRAs r=16 alpha=32 on "q","v" (SEQ_2_SEQ_LM), and the six full
  checkpoints: base + a random rank-16 update on every q and v matrix (self- and cross-attention).
- llama: LlamaForCausalLM (hidden 256, 2 heads of 128, 1 KV head), bfloat16, tied embeddings, llama3
  rope scaling, a byte-level BPE with the Llama-3 special tokens appended after the vocabulary (as the
  real 128000..128255); LoRAs r=16 alpha=32 on q_proj, v_proj (the adapters' modules are not published
  in the registry; q,v is our assumption).
- mistral: MistralForCausalLM (same sizes), bfloat16, sliding_window null, rope_theta 1e6, a byte-level
  BPE with <unk>=0, <s>=1, </s>=2; LoRAs r=16 alpha=32 on q_proj, k_proj, v_proj (Lots-of-LoRAs adapt q,
  k and v with alpha/r = 2).
The tokenizers are trained on the fixture datasets' text and the task YAMLs (prompts and answer words).

A mirror is written into a temporary folder beside ``out`` and moved into place id by id; the marker
``out/MIRROR_COMPLETE.<backbone>`` is written last, and a complete mirror is returned at once.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..io.files import resource_dir, write_json_atomic
from . import get_backbone
from .micro import randomize_lora_
from .spec import Backbone

BUILD_VERSION = 1
MARKER = "MIRROR_COMPLETE"
VOCAB = 2000  # trained vocabulary, before the family's appended special tokens
LORA_STD = 0.02  # std of the random A and B entries (and of the full checkpoints' rank-16 factors)
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# Llama 3.2's template without the tool-calling branches: same system header, dates and turn markers.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- endif %}{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
_NAMED = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
          "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
          "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIALS = _NAMED + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]  # 256, as 128000..128255
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LORA = {  # LoraConfig of the published adapters, per family
    "flan": dict(r=16, lora_alpha=32, target_modules=["q", "v"], lora_dropout=0.1, task_type="SEQ_2_SEQ_LM"),
    "llama": dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.05,
                  task_type="CAUSAL_LM"),
    "mistral": dict(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj"], lora_dropout=0.05,
                    task_type="CAUSAL_LM"),
}


def corpus(data_dir: Path | None = FIXTURES) -> list[str]:
    """Tokenizer training text: every string in the fixture rows, and the task YAMLs (prompts, labels)."""
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    lines = []
    for path in sorted(Path(data_dir).rglob("*.jsonl")) if data_dir and Path(data_dir).is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.extend(strings(json.loads(line)))
    for path in sorted(resource_dir("tasks").rglob("*.yaml")):
        lines.extend(path.read_text(encoding="utf-8").splitlines())
    return lines


def build_tokenizer(family: str, text: list[str]):
    """The family's tokenizer (a ``PreTrainedTokenizerFast``), trained on ``text``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "flan":  # SentencePiece-style pieces ("▁word") as T5's; unseen characters are <unk>
        # BPE, not T5's Unigram: the Unigram trainer orders tied pieces differently from run to run, and
        # a mirror must be reproducible (the run cache keys on the base's sha256, tokenizer included).
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(text, trainers.BpeTrainer(
            vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False))
        extra = [f"<extra_id_{i}>" for i in range(99, -1, -1)]  # <extra_id_0> last, as in T5
        tok.add_special_tokens(extra)
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                       additional_special_tokens=extra, model_max_length=512)
    tok = Tokenizer(models.BPE())
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if family == "mistral":  # <unk>, <s>, </s> first: ids 0, 1, 2 as in Mistral's vocabulary
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator(text, trainers.BpeTrainer(
            vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet,
            show_progress=False))
        bos, names = "<s>", dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        template = MISTRAL_TEMPLATE
    else:  # llama: Llama 3's split regex; the 256 special tokens come after the vocabulary
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=alphabet,
                                                          show_progress=False))
        tok.add_special_tokens(LLAMA3_SPECIALS)
        bos, names = "<|begin_of_text|>", dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        template = LLAMA3_TEMPLATE
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=131072 if family == "llama" else 32768,
                                   **names)
    fast.chat_template = template
    return fast


def model_config(family: str, tok) -> tuple[dict, dict]:
    """config.json and generation_config.json as the hub has them, with our sizes and token ids."""
    ids = tok.convert_tokens_to_ids
    if family == "flan":
        config = {
            "architectures": ["T5ForConditionalGeneration"], "d_ff": 256, "d_kv": 128, "d_model": 128,
            "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
            "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True,
            "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "t5", "n_positions": 512,
            "num_decoder_layers": 2, "num_heads": 2, "num_layers": 2, "output_past": True, "pad_token_id": 0,
            "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
            "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True,
            "vocab_size": -(-len(tok) // 128) * 128,  # padded, as flan-t5's 32128 for 32100 tokens
        }
        return config, {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    common = {
        "attention_dropout": 0.0, "bos_token_id": tok.bos_token_id, "hidden_act": "silu", "hidden_size": 256,
        "initializer_range": 0.02, "intermediate_size": 512, "num_attention_heads": 2, "num_hidden_layers": 2,
        "num_key_value_heads": 1, "rms_norm_eps": 1e-05, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": len(tok),
    }
    if family == "mistral":
        config = {"architectures": ["MistralForCausalLM"], **common, "eos_token_id": tok.eos_token_id,
                  "max_position_embeddings": 32768, "model_type": "mistral", "rope_theta": 1000000.0,
                  "sliding_window": None, "tie_word_embeddings": False}
        return config, {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    eos = ids(["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])
    config = {"architectures": ["LlamaForCausalLM"], **common, "attention_bias": False, "eos_token_id": eos,
              "head_dim": 128, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
              "pretraining_tp": 1, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                    "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "rope_theta": 500000.0, "tie_word_embeddings": True}
    return config, {"bos_token_id": tok.bos_token_id, "do_sample": True, "eos_token_id": eos, "temperature": 0.6,
                    "top_p": 0.9}


def _auto(family: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if family == "flan" else AutoModelForCausalLM


def save_model(model, dst: Path, tok, config: dict, generation: dict) -> None:
    """Weights by transformers; config files in the hub's own form (``rope_scaling``, ``torch_dtype``)."""
    model.save_pretrained(dst)
    save_model_files(dst, tok, config, generation)


def save_model_files(dst: Path, tok, config: dict, generation: dict) -> None:
    """Everything of a model directory but its weights: the tokenizer, config.json and generation_config.json."""
    tok.save_pretrained(dst)
    tok_config = json.loads((dst / "tokenizer_config.json").read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 5 writes its own name, unknown to 4.x
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (dst / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def build_base(family: str, dst: Path, tok, seed: int):
    """A random base model saved to ``dst``; returns it in float32 (the saved values, upcast)."""
    from transformers import AutoConfig

    config, generation = model_config(family, tok)
    dst.mkdir(parents=True)
    (dst / "config.json").write_text(json.dumps(config))
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's generator
        torch.manual_seed(seed)
        model = _auto(family).from_config(AutoConfig.from_pretrained(dst), dtype=torch.float32)
        if family == "flan":  # flan-t5 has its own lm_head (tie_word_embeddings false); transformers 5 ties it
            model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape))
    save_model(model.to(getattr(torch, config["torch_dtype"])), dst, tok, config, generation)
    return model.float().eval()


def save_random_lora(base, dst: Path, family: str, base_id: str, seed: int) -> None:
    """A PEFT LoRA of the published shape with random, non-zero A and B (std ``LORA_STD``)."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(**LORA[family]))
    randomize_lora_(model, seed, LORA_STD)
    model.save_pretrained(dst)
    config_path = dst / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_id  # not the build folder: the adapter names its base by hub id
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def save_full_checkpoint(base, dst: Path, tok, targets: tuple[str, ...], seed: int) -> None:
    """base + (alpha/r)·B·A (rank 16, random) on every ``targets`` matrix, saved as a full model."""
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    r, scale = LORA["flan"]["r"], LORA["flan"]["lora_alpha"] / LORA["flan"]["r"]
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
                out_f, in_f = module.weight.shape
                B = torch.randn(out_f, r, generator=gen, dtype=torch.float64) * LORA_STD
                A = torch.randn(r, in_f, generator=gen, dtype=torch.float64) * LORA_STD
                module.weight.copy_(module.weight.double() + scale * B @ A)
    config, generation = model_config("flan", tok)
    dst.mkdir(parents=True)
    save_model(model, dst, tok, config, generation)


def marker_path(backbone: str, out: Path) -> Path:
    return Path(out) / f"{MARKER}.{get_backbone(backbone).name}"


def _complete(bb: Backbone, out: Path, seed: int) -> bool:
    marker = marker_path(bb.name, out)
    if not marker.is_file():
        return False
    info = json.loads(marker.read_text())
    ids = [bb.base_id, *(a.id for a in bb.adapters.values())]
    return (info.get("version"), info.get("seed")) == (BUILD_VERSION, seed) and all((out / i).is_dir() for i in ids)


def build_mirror(backbone: str, out: Path, *, seed: int = 0, data_dir: Path | None = FIXTURES) -> Path:
    """Write a rehearsal mirror of ``backbone`` under ``out/<hub id>/``; returns ``out`` (the folder that
    ``MERGE_BENCH_MODELS`` names). ``data_dir``: the hub-schema datasets whose text trains the tokenizer."""
    bb = get_backbone(backbone)
    if bb.suite not in LORA:
        raise ValueError(f"no rehearsal mirror for backbone {bb.name!r}; available: flan-t5-large, "
                         "llama-3.2-3b-instruct, mistral-7b-instruct-v0.2")
    out = Path(out).resolve()
    if _complete(bb, out, seed):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{MARKER}.{bb.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per backbone and mirror; the others wait, then return
        if not _complete(bb, out, seed):
            _build(bb, out, seed, data_dir)
    return out


def _build(bb: Backbone, out: Path, seed: int, data_dir: Path | None) -> None:
    start = time.perf_counter()
    marker_path(bb.name, out).unlink(missing_ok=True)
    family = bb.suite
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{bb.name}-", dir=out))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" for each of up to 21 models
    try:
        tok = build_tokenizer(family, corpus(data_dir))
        base = build_base(family, tmp / bb.base_id, tok, seed)
        for i, ref in enumerate(bb.adapters.values()):
            if ref.kind == "full":
                save_full_checkpoint(base, tmp / ref.id, tok, ref.targets or ("q", "v"), seed=seed * 1000 + i + 1)
            else:
                save_random_lora(base, tmp / ref.id, family, bb.base_id, seed=seed * 1000 + i + 1)
        ids = [bb.base_id, *(a.id for a in bb.adapters.values())]
        for model_id in ids:  # each id appears whole (a rename) or not at all
            (tmp / model_id / "README.md").write_text(  # replaces PEFT's card, which names the build folder
                f"# {model_id} (rehearsal stand-in)\n\nRandom weights shaped as the published {model_id}, built by "
                f"merge_bench.backbones.rehearsal (backbone {bb.name}, seed {seed}). Scores on it mean nothing.\n")
            dst = out / model_id
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / model_id, dst)
        write_json_atomic(marker_path(bb.name, out), {
            "backbone": bb.name, "seed": seed, "version": BUILD_VERSION, "ids": ids,
            "seconds": round(time.perf_counter() - start, 1)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()
