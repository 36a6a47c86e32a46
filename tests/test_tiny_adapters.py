"""The shipped tiny adapters (hashes, recipe, loadable with PEFT on a SmolLM2-shaped model) and the training
script's pieces: prompts as lm-eval renders them, loss masking, reproducible training."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from merge_bench.merging.adapters import LoraAdapter

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters" / "tiny"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


train = _load("train_adapters")
SHORTS = [t.short for t in train.TASKS]

# SmolLM2-135M-Instruct's shape (config.json of the converted base), with a small vocabulary: the
# adapters touch no embedding, and a 49152-row one would only slow the test down.
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, vocab_size=64,
                     tie_word_embeddings=True)


def test_every_task_has_an_adapter_and_sums_match():
    assert sorted(p.name for p in ADAPTERS.iterdir() if p.is_dir()) == sorted(SHORTS)
    lines = (ADAPTERS / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, rel = line.split("  ")
        listed[rel] = digest
    expected = {f"{s}/{f}" for s in SHORTS for f in ("adapter_config.json", "adapter_model.safetensors")}
    assert set(listed) == expected
    for rel, digest in listed.items():
        assert hashlib.sha256((ADAPTERS / rel).read_bytes()).hexdigest() == digest, rel
    assert train.sha256sums(ADAPTERS) == (ADAPTERS / "SHA256SUMS").read_text()


@pytest.mark.parametrize("short", SHORTS)
def test_adapter_follows_the_one_recipe(short):
    from safetensors import safe_open

    cfg = json.loads((ADAPTERS / short / "adapter_config.json").read_text())
    recipe = train.RECIPE
    assert (cfg["r"], cfg["lora_alpha"], cfg["peft_type"]) == (recipe.r, recipe.alpha, "LORA")
    assert sorted(cfg["target_modules"]) == sorted(recipe.targets)
    assert not cfg.get("use_rslora") and cfg["base_model_name_or_path"] == train.BASE_MODEL_ID
    assert sorted(p.name for p in (ADAPTERS / short).iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    with safe_open(ADAPTERS / short / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert len(keys) == 2 * 30 * len(recipe.targets)
        for key in keys:
            t = f.get_tensor(key)
            assert t.dtype == getattr(torch, recipe.save_dtype) and torch.isfinite(t.float()).all()
            if ".lora_B." in key:
                assert t.abs().max() > 0, f"{short}: {key} is still zero: the adapter did not train"


def test_training_record_matches_the_recipe():
    record = json.loads((ADAPTERS / "TRAINING.json").read_text())
    assert record["recipe"] == json.loads(json.dumps(asdict(train.RECIPE)))
    assert [t["task"] for t in record["tasks"]] == SHORTS
    for t in record["tasks"]:
        assert t["steps"] == train.RECIPE.steps
        assert t["loss_last10_mean"] < t["loss_first"] / 4, t["task"]  # it learned
        assert t["adapter_bytes"] == (ADAPTERS / t["task"] / "adapter_model.safetensors").stat().st_size


@pytest.fixture(scope="module")
def smollm2_shaped():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).eval()


@pytest.mark.parametrize("short", SHORTS[:2])
def test_adapter_loads_with_peft_and_moves_the_output(smollm2_shaped, short):
    from peft import PeftModel

    ids = torch.tensor([[1, 5, 9, 20, 33]])
    with torch.no_grad():
        before = smollm2_shaped(ids).logits
        model = PeftModel.from_pretrained(smollm2_shaped, ADAPTERS / short).eval()
        try:
            after = model(ids).logits
            # merge-bench's own loader reads the same Δ = s·B·A that PEFT applies
            ours = LoraAdapter(ADAPTERS / short).delta("model.layers.7.self_attn.q_proj.weight").dense()
            layer = model.base_model.model.model.layers[7].self_attn.q_proj
            assert torch.allclose(layer.get_delta_weight("default"), ours, atol=1e-6)
        finally:
            model.unload()
    assert not torch.allclose(before, after)


def test_prompt_is_lm_evals_rendering(micro_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_llama)
    prompt = train.render_prompt(tok, "Digits: 1 2 1\nWhich digit appears twice?")
    assert prompt == "<|im_start|>user\nDigits: 1 2 1\nWhich digit appears twice?<|im_end|>\n<|im_start|>assistant\n"
    ids, labels = train.encode_example(tok, "Digits: 1 2 1\nWhich digit appears twice?", "1")
    n_prompt = len(train.encode_prompt(tok, prompt))
    assert ids[:n_prompt] == tok(prompt, add_special_tokens=False).input_ids  # no extra BOS: as lm-eval
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] == tok("1", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert tok.decode(ids[n_prompt:]) == "1<|im_end|>"


def test_answer_loss_equals_the_causal_lm_loss(micro_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_llama)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(micro_llama),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    rows = train.rows("nli", "train")[:3]
    batch = train._collate([train.encode_example(tok, r["input"], r["output"]) for r in rows], tok.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(train.answer_loss(model, batch), model(**batch).loss, rtol=1e-5)


def test_training_is_reproducible_and_seeded(micro_llama, tmp_path):
    recipe = replace(train.RECIPE, steps=3, warmup=1, batch_size=2)
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    runs = [train.train_one(micro_llama, "digit", tmp_path / name, recipe=recipe, log=False) for name in ("a", "b")]
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before  # restored
    assert runs[0]["loss_every_10"] == runs[1]["loss_every_10"]
    weights = [(tmp_path / n / "adapter_model.safetensors").read_bytes() for n in ("a", "b")]
    assert weights[0] == weights[1]
    train.train_one(micro_llama, "digit", tmp_path / "c", recipe=replace(recipe, seed=recipe.seed + 1), log=False)
    assert (tmp_path / "c" / "adapter_model.safetensors").read_bytes() != weights[0]


def test_tiny_backbone_serves_the_shipped_adapters():
    from merge_bench.backbones import DEFAULT_BACKBONE, get_backbone, resolve
    from merge_bench.evaluation.tasks import tasks_dir

    tiny = get_backbone(DEFAULT_BACKBONE)
    assert tiny.name == "tiny" and tiny.tasks == sorted(SHORTS)
    for short in tiny.tasks:
        assert resolve(tiny.adapters[short].id) == ADAPTERS / short
        assert (tasks_dir() / "tiny" / f"{tiny.lm_eval_task(short)}.yaml").is_file(), short
