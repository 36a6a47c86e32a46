"""Inputs: LoRA task vectors against PEFT's own merged weights, full checkpoints, validation errors."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from merge_bench.backbones.micro import build_random_lora
from safetensors.torch import load_file, save_file

from merge_bench.merging.adapters import BaseModel, FullCheckpoint, LoraAdapter, open_input, pattern_value, plan
from merge_bench.merging.delta import LowRank


def peft_task_vectors(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Ground truth: PEFT's merge_and_unload weights minus the base weights, for every changed weight."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload()
    return {k: v - base[k] for k, v in merged.state_dict().items() if not torch.equal(v, base[k])}


def assert_matches_peft(base_dir: Path, adapter_dir: Path) -> LoraAdapter:
    adapter = LoraAdapter(adapter_dir)
    truth = peft_task_vectors(base_dir, adapter_dir)
    assert set(adapter.shapes) == set(truth)
    for key, tau in truth.items():
        delta = adapter.delta(key)
        assert isinstance(delta, LowRank) and delta.B.dtype == torch.float32
        torch.testing.assert_close(delta.dense(), tau, rtol=0, atol=2e-6)
    return adapter


def test_lora_scale_matches_peft_merge(micro_llama, micro_loras):
    adapter = assert_matches_peft(micro_llama, micro_loras[0])
    assert adapter.ranks == {k: 4 for k in adapter.shapes}
    key = "model.layers.0.self_attn.q_proj.weight"
    A, B = (load_file(micro_loras[0] / "adapter_model.safetensors")[f"base_model.model.{key[:-7]}.lora_{x}.weight"]
            for x in "AB")
    torch.testing.assert_close(adapter.delta(key).dense(), (8 / 4) * B @ A)  # alpha / r = 8 / 4


def test_rslora_scale_matches_peft(micro_llama, tmp_path):
    path = build_random_lora(micro_llama, tmp_path / "rs", seed=5, r=4, alpha=6, use_rslora=True)
    adapter = assert_matches_peft(micro_llama, path)
    key = "model.layers.1.self_attn.v_proj.weight"
    sd = load_file(path / "adapter_model.safetensors")
    A, B = (sd[f"base_model.model.{key[:-7]}.lora_{x}.weight"] for x in "AB")
    torch.testing.assert_close(adapter.delta(key).dense(), (6 / 2.0) * B @ A)  # alpha / sqrt(r)


def test_rank_and_alpha_patterns_match_peft(micro_llama, tmp_path):
    path = build_random_lora(micro_llama, tmp_path / "pat", seed=6, r=4, alpha=8,
                             targets=("q_proj", "k_proj", "v_proj"),
                             rank_pattern={"q_proj": 2, r"layers\.1\.self_attn\.k_proj": 6},
                             alpha_pattern={"layers.1.self_attn.v_proj": 32})
    adapter = assert_matches_peft(micro_llama, path)
    assert adapter.ranks["model.layers.0.self_attn.q_proj.weight"] == 2
    assert adapter.ranks["model.layers.1.self_attn.k_proj.weight"] == 6
    assert adapter.ranks["model.layers.0.self_attn.k_proj.weight"] == 4


def test_pattern_lookup_follows_peft_semantics():
    patterns = {"q_proj": 2, r"layers\.1\..*v_proj": 6}
    assert pattern_value(patterns, "model.layers.0.self_attn.q_proj", 8) == 2
    assert pattern_value(patterns, "model.layers.1.self_attn.v_proj", 8) == 6
    assert pattern_value(patterns, "model.layers.0.self_attn.v_proj", 8) == 8
    assert pattern_value(patterns, "model.layers.0.self_attn.xq_proj", 8) == 8  # a suffix must follow a dot


def test_adapter_name_in_keys_and_bin_weights(micro_llama, micro_loras, tmp_path):
    reference = LoraAdapter(micro_loras[1])
    named = tmp_path / "named"
    shutil.copytree(micro_loras[1], named)
    sd = load_file(named / "adapter_model.safetensors")
    save_file({k.replace(".weight", ".default.weight"): v for k, v in sd.items()}, named / "adapter_model.safetensors")
    as_bin = tmp_path / "bin"
    shutil.copytree(micro_loras[1], as_bin)
    (as_bin / "adapter_model.safetensors").unlink()
    torch.save(sd, as_bin / "adapter_model.bin")
    for other in (LoraAdapter(named), LoraAdapter(as_bin)):
        assert set(other.shapes) == set(reference.shapes)
        for key in reference.shapes:
            assert torch.equal(other.delta(key).dense(), reference.delta(key).dense())


class NotATensor:
    pass


def test_bin_adapter_is_never_fully_unpickled(micro_loras, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(micro_loras[0], evil)
    (evil / "adapter_model.safetensors").unlink()
    torch.save({"x": NotATensor()}, evil / "adapter_model.bin")
    with pytest.raises(ValueError, match="weights-only"):
        LoraAdapter(evil)


def test_fan_in_fan_out_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(base)
    path = build_random_lora(base, tmp_path / "ff", seed=3, r=4, alpha=8, targets=("c_attn",), fan_in_fan_out=True)
    adapter = assert_matches_peft(base, path)
    assert adapter.shapes["transformer.h.0.attn.c_attn.weight"] == (32, 96)  # Conv1D: in × out
    the_plan = plan([adapter], BaseModel(base))
    assert the_plan.fan_in_fan_out


def test_unsupported_peft_options_are_rejected(micro_llama, micro_loras, tmp_path):
    dora = build_random_lora(micro_llama, tmp_path / "dora", seed=1, use_dora=True)
    with pytest.raises(ValueError, match=r"DoRA.*only plain LoRA"):
        LoraAdapter(dora)
    ia3 = tmp_path / "ia3"
    shutil.copytree(micro_loras[0], ia3)
    config = json.loads((ia3 / "adapter_config.json").read_text())
    (ia3 / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="PEFT type IA3 is not supported"):
        LoraAdapter(ia3)
    pissa = tmp_path / "pissa"
    shutil.copytree(micro_loras[0], pissa)
    (pissa / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": "pissa_niter_4"}))
    with pytest.raises(ValueError, match="also changes the base weights; convert it"):
        LoraAdapter(pissa)


def corrupt_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    sd = load_file(dst / "adapter_model.safetensors")
    edit(sd)
    save_file(sd, dst / "adapter_model.safetensors")
    return dst


def test_bad_adapter_files_name_the_problem(micro_loras, tmp_path):
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"

    def nan(sd):
        sd[key][3, 1] = float("nan")

    path = corrupt_copy(micro_loras[0], tmp_path / "nan", nan)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'nan'}.*{key}.*NaN"):
        LoraAdapter(path)
    path = corrupt_copy(micro_loras[0], tmp_path / "int8", lambda sd: sd.update({key: sd[key].to(torch.int8)}))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'int8'}.*tensor '{key}' has dtype int8; merging needs "
                                         "floating-point weights"):
        LoraAdapter(path)
    path = corrupt_copy(micro_loras[0], tmp_path / "noB", lambda sd: sd.pop(key))
    with pytest.raises(ValueError, match="v_proj has lora_A but not both"):
        LoraAdapter(path)

    def wrong_rank(sd):
        sd[key] = sd[key][:, :3].contiguous()
        a = key.replace("lora_B", "lora_A")
        sd[a] = sd[a][:3].contiguous()

    path = corrupt_copy(micro_loras[0], tmp_path / "rank", wrong_rank)
    with pytest.raises(ValueError, match="configured rank r=4"):
        LoraAdapter(path)
    embedding = {"base_model.model.model.embed_tokens.lora_embedding_A": torch.ones(4, 9)}
    path = corrupt_copy(micro_loras[0], tmp_path / "emb", lambda sd: sd.update(embedding))
    with pytest.raises(ValueError, match="embedding layers is not supported"):
        LoraAdapter(path)
    truncated = tmp_path / "trunc"
    shutil.copytree(micro_loras[0], truncated)
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{truncated}/adapter_model.safetensors: not a readable safetensors"):
        LoraAdapter(truncated)


def test_neither_lora_nor_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a PEFT LoRA directory"):
        open_input(tmp_path / "empty", None, None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_input(tmp_path / "missing dir", None, None)


# --------------------------------------------------------------------------------------------
# Full fine-tuned checkpoints


@pytest.fixture(scope="module")
def finetuned(micro_llama, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A sharded full checkpoint: the base with known changes to two q/v weights and one norm."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(micro_llama)
    gen = torch.Generator().manual_seed(11)
    changes = {name: torch.randn(model.get_parameter(name).shape, generator=gen) * 0.01
               for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight")}
    with torch.no_grad():
        for name, delta in changes.items():
            model.get_parameter(name).add_(delta)
        model.get_parameter("model.layers.0.input_layernorm.weight").mul_(1.5)  # 1-D: never a task vector
    out = tmp_path_factory.mktemp("ft") / "ft"
    model.save_pretrained(out, max_shard_size="100KB")
    return out, changes


def test_full_checkpoint_task_vectors(micro_llama, finetuned):
    path, changes = finetuned
    assert (path / "model.safetensors.index.json").is_file()
    base = BaseModel(micro_llama)
    ft = FullCheckpoint(path, base, targets=None)
    assert set(ft.shapes) == set(changes)  # only the 2-D weights that differ
    for key, delta in changes.items():
        torch.testing.assert_close(ft.delta(key), delta, rtol=0, atol=1e-7)
    only_q = FullCheckpoint(path, base, targets=["q_proj"])
    assert list(only_q.shapes) == [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(2)]
    assert torch.count_nonzero(only_q.delta("model.layers.1.self_attn.q_proj.weight")) == 0
    with pytest.raises(ValueError, match="needs the base model"):
        FullCheckpoint(path, None, targets=None)


def test_union_of_targets_missing_module_is_zero(micro_llama, micro_loras, tmp_path, caplog):
    qk = build_random_lora(micro_llama, tmp_path / "qk", seed=9, targets=("q_proj", "k_proj"))
    inputs = [LoraAdapter(micro_loras[0]), LoraAdapter(qk)]
    with caplog.at_level(logging.WARNING, logger="merge_bench.merging.adapters"):
        the_plan = plan(inputs, BaseModel(micro_llama))
    assert the_plan.keys == [f"model.layers.{i}.self_attn.{m}_proj.weight" for i in range(2) for m in "kqv"]
    assert any("does not target 2 of 6" in r.message and str(qk) in r.message for r in caplog.records)
    v0 = "model.layers.0.self_attn.v_proj.weight"
    zero = the_plan.delta(1, v0)
    assert isinstance(zero, LowRank) and zero.rank == 0 and zero.shape == (32, 64)
    assert torch.equal(the_plan.delta(0, v0).dense(), inputs[0].delta(v0).dense())


def test_shape_mismatches_name_input_module_and_shapes(micro_llama, micro_loras, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other_base"
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(other)
    with pytest.raises(ValueError, match=rf"input {micro_loras[0]}: module model.layers.0.self_attn.q_proj: "
                                         r"expected shape \(32, 32\) \(from base .*\), got \(64, 64\)"):
        plan([LoraAdapter(micro_loras[0])], BaseModel(other))
    small = build_random_lora(other, tmp_path / "small", seed=1)
    with pytest.raises(ValueError, match=rf"input {small}: module .*q_proj: expected shape \(64, 64\) "
                                         rf"\(as in {micro_loras[0]}\), got \(32, 32\)"):
        plan([LoraAdapter(micro_loras[0]), LoraAdapter(small)], None)
    gate = build_random_lora(micro_llama, tmp_path / "gate", seed=2, targets=("gate_proj",))
    renamed = corrupt_copy(gate, tmp_path / "renamed", lambda sd: [sd.__setitem__(k.replace("mlp", "ffn"), sd.pop(k))
                                                                   for k in list(sd)])
    with pytest.raises(ValueError, match=r"module model.layers.0.ffn.gate_proj has no parameter .* in base"):
        plan([LoraAdapter(renamed)], BaseModel(micro_llama))


def test_hub_id_resolves_from_the_local_cache(micro_loras, tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub.snapshot_download (offline here: the cache answers)."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someorg--task-lora" / "snapshots" / ("a" * 40)
    shutil.copytree(micro_loras[0], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    adapter = open_input("someorg/task-lora", None, None)
    assert adapter.path == snapshot and adapter.spec == "someorg/task-lora"
    reference = LoraAdapter(micro_loras[0])
    key = next(iter(reference.shapes))
    assert torch.equal(adapter.delta(key).dense(), reference.delta(key).dense())
    with pytest.raises(FileNotFoundError, match="could not be fetched from the Hugging Face hub"):
        open_input("someorg/not-cached", None, None)


def test_finite_check_survives_an_overflowing_sum():
    from merge_bench.io.tensors import check_finite

    check_finite(torch.full((8,), 3e38), "f.safetensors", "big")  # the sum overflows; every value is finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.ones(5, 3, dtype=torch.bfloat16)
        t[2, 1] = bad
        with pytest.raises(ValueError, match=r"f.safetensors: tensor 'x' has 1 NaN/Inf"):
            check_finite(t, "f.safetensors", "x")
