"""Rehearsal mirrors of the real backbones (merge_bench.backbones.rehearsal): every registry id resolves
into the mirror, the bases load with the real architecture and head dimension 128, the tokenizers carry
the family's markers, the adapters have the published shape, merging works on them, and one cheap run
of the whole pipeline per backbone goes through."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from merge_bench.backbones import get_backbone, resolve
from rehearsal import FIXTURES, rehearsal_env  # noqa: F401  (rehearsal_env is a fixture)

BACKBONES = ["flan", "llama", "mistral"]
# The published adapters: LoraConfig targets and task type, and how many modules that makes on 2 layers
# (T5: encoder self-attention q,v; decoder self- and cross-attention q,v).
PUBLISHED = {
    "flan": ({"q", "v"}, "SEQ_2_SEQ_LM", 2 * 2 + 2 * 4),
    "llama": ({"q_proj", "v_proj"}, "CAUSAL_LM", 2 * 2),
    "mistral": ({"q_proj", "k_proj", "v_proj"}, "CAUSAL_LM", 2 * 3),
}


@pytest.fixture
def mirror(rehearsal_env, monkeypatch):
    """The mirror of one backbone with MERGE_BENCH_MODELS / MERGE_BENCH_DATA_DIR set: (backbone, env)."""

    def use(name: str):
        env = rehearsal_env(name)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return get_backbone(name), env

    return use


def tensors(directory, name: str) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / name), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def where(ref) -> Path:
    """An adapter's directory, through the registry's resolver (checked as its kind's loader reads it)."""
    return resolve(ref.id, ref.revision, kind=ref.kind)


def auto_model(bb):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if bb.seq2seq else AutoModelForCausalLM


@pytest.mark.parametrize("name", BACKBONES)
def test_every_registry_id_resolves_into_the_mirror(mirror, name):
    bb, env = mirror(name)
    assert str(resolve(bb.base_id, bb.base_revision)) == f"{env['MERGE_BENCH_MODELS']}/{bb.base_id}"
    for ref in bb.adapters.values():
        assert str(where(ref)) == f"{env['MERGE_BENCH_MODELS']}/{ref.id}"


@pytest.mark.parametrize("name", BACKBONES)
def test_base_has_the_real_architecture_and_head_dim_128(mirror, name):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    bb, _ = mirror(name)
    base = resolve(bb.base_id)
    raw = json.loads((base / "config.json").read_text())
    config, tok = AutoConfig.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    gen = GenerationConfig.from_pretrained(base)
    model = auto_model(bb).from_pretrained(base, dtype=torch.float32).eval()
    assert raw["num_layers" if bb.seq2seq else "num_hidden_layers"] == 2
    if name == "flan":
        assert type(model).__name__ == "T5ForConditionalGeneration" and config.d_kv == 128
        assert raw["feed_forward_proj"] == "gated-gelu" and raw["tie_word_embeddings"] is False
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()  # flan-t5 has its own lm_head
        assert raw["vocab_size"] % 128 == 0 and raw["vocab_size"] >= len(tok)
        assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
        assert (gen.pad_token_id, gen.eos_token_id, gen.decoder_start_token_id) == (0, 1, 0)
    else:
        assert config.head_dim == 128 and raw["vocab_size"] == len(tok) and raw["torch_dtype"] == "bfloat16"
        assert model.model.embed_tokens.weight.shape == (len(tok), raw["hidden_size"])
        assert gen.bos_token_id == tok.bos_token_id
    if name == "llama":
        assert type(model).__name__ == "LlamaForCausalLM" and raw["tie_word_embeddings"] is True
        assert raw["rope_theta"] == 500000.0 and raw["rope_scaling"]["rope_type"] == "llama3"
        assert tok.eos_token == "<|eot_id|>" and tok.eos_token_id in gen.eos_token_id
        assert tok.convert_ids_to_tokens(gen.eos_token_id) == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    if name == "mistral":
        assert type(model).__name__ == "MistralForCausalLM" and raw["tie_word_embeddings"] is False
        assert raw["rope_theta"] == 1000000.0 and raw["sliding_window"] is None
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2) == (0, gen.bos_token_id, 2)
    with torch.no_grad():
        ids = tok("The movie was great.", return_tensors="pt").input_ids
        extra = {"decoder_input_ids": torch.zeros_like(ids[:, :1])} if bb.seq2seq else {}
        logits = model(input_ids=ids, **extra).logits
    assert logits.shape[-1] == raw["vocab_size"] and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_tokenizer_has_the_family_markers_and_encodes_prompts_and_labels(mirror, name):
    from transformers import AutoTokenizer

    from merge_bench.evaluation.tasks import list_tasks

    bb, _ = mirror(name)
    tok = AutoTokenizer.from_pretrained(resolve(bb.base_id))
    assert len(tok) < 4000
    turn = [{"role": "user", "content": "Is it raining?"}]
    if name == "flan":
        assert not tok.chat_template
        assert tok.convert_ids_to_tokens(tok("yes").input_ids)[-1] == "</s>"
    else:
        text = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        markers = {"mistral": ["<s>"], "llama": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                                 "<|eot_id|>"]}[name]
        ids = tok(text, add_special_tokens=False).input_ids
        for marker in markers:  # each a single special token in the rendered prompt
            assert tok.convert_tokens_to_ids(marker) in ids
    if name == "mistral":
        assert text == "<s>[INST] Is it raining? [/INST]"
    if name == "llama":
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
        assert "<|start_header_id|>user<|end_header_id|>\n\nIs it raining?<|eot_id|>" in text
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    labels = {label for task in list_tasks(bb.suite) for label in task.labels}
    assert labels
    rows = (FIXTURES / "nyu-mll" / "glue" / "rte" / "validation.jsonl").read_text().splitlines()[:5]
    for text in sorted(labels) + [json.loads(r)["sentence1"] for r in rows]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids and tok.unk_token_id not in ids, text
        assert tok.decode(ids).strip() == " ".join(text.split()), text


@pytest.mark.parametrize("name", BACKBONES)
def test_loras_have_the_published_shape(mirror, name):
    bb, _ = mirror(name)
    targets, task_type, n_modules = PUBLISHED[name]
    base = tensors(resolve(bb.base_id), "model.safetensors")
    loras = [a for a in bb.adapters.values() if a.kind == "lora"]
    assert len(loras) == {"flan": 7, "llama": 13, "mistral": 20}[name]
    for ref in loras:
        path = where(ref)
        config = json.loads((path / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], config["task_type"]) == (16, 32, task_type)
        assert set(config["target_modules"]) == targets and config["base_model_name_or_path"] == bb.base_id
        weights = tensors(path, "adapter_model.safetensors")
        a_keys = [k for k in weights if ".lora_A." in k]
        assert len(a_keys) == n_modules and len(weights) == 2 * n_modules
        for key in a_keys:
            A, B = weights[key], weights[key.replace(".lora_A.", ".lora_B.")]
            out_f, in_f = base[key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")].shape
            assert A.shape == (16, in_f) and B.shape == (out_f, 16)
            assert A.abs().sum() > 0 and B.abs().sum() > 0


def test_flan_full_checkpoints_differ_from_the_base_by_rank_16_on_q_and_v(mirror):
    from transformers import AutoModelForSeq2SeqLM

    bb, _ = mirror("flan")
    base = tensors(resolve(bb.base_id), "model.safetensors")
    qv = {k for k in base if k.endswith((".q.weight", ".v.weight"))}
    assert len(qv) == PUBLISHED["flan"][2]
    full = [a for a in bb.adapters.values() if a.kind == "full"]
    assert len(full) == 6
    for ref in full:
        path = where(ref)
        assert (path / "tokenizer.json").is_file() and (path / "config.json").is_file()
        ft = tensors(path, "model.safetensors")
        assert ft.keys() == base.keys()
        for key, theta in ft.items():
            if key not in qv:
                assert torch.equal(theta, base[key]), key
                continue
            s = torch.linalg.svdvals((theta.double() - base[key].double()))
            assert s[0] > 0 and int((s > s[0] * 1e-4).sum()) <= 16, key
    AutoModelForSeq2SeqLM.from_pretrained(where(full[0]))


@pytest.mark.parametrize("name", BACKBONES)
def test_simple_avg_merges_on_the_mirror(mirror, name):
    from merge_bench.merging.api import merge

    bb, _ = mirror(name)
    base = resolve(bb.base_id)
    first = [a for a in bb.adapters.values() if a.kind == "lora"][:2]
    pairs = [first]
    if name == "flan":  # a LoRA with a full checkpoint too
        pairs.append([first[0], next(a for a in bb.adapters.values() if a.kind == "full")])
    shapes = {k: v.shape for k, v in tensors(base, "model.safetensors").items()}
    model = auto_model(bb).from_pretrained(base, dtype=torch.float32)
    for pair in pairs:
        result = merge("simple_avg", [where(a) for a in pair], base=base)
        assert result.deltas and all(tuple(d.shape) == tuple(shapes[k]) for k, d in result.deltas.items())
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        handle = result.apply_to(model)
        changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
        handle.restore()
        assert changed == set(result.deltas)


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES)
def test_run_benchmark_smoke_on_the_mirror(mirror, name, tmp_path):
    from merge_bench.bench.run import RunConfig, run_benchmark

    mirror(name)
    # flan: a GLUE LoRA and a full checkpoint, both with short prompts (an unstopped T5 decodes up to
    # prompt length + 10 tokens in lm-eval, so long prompts cost minutes on a random model).
    picks = {"tasks": ["sst2", "finance"]} if name == "flan" else {"n_tasks": 2}
    cfg = RunConfig(backbone=name, methods=["simple_avg"], limit=2, out=tmp_path, cache_dir=tmp_path / "cache",
                    **picks)
    record = run_benchmark(cfg, progress=False)
    tasks = record["config"]["tasks"]
    assert len(tasks) == 2 and set(record["lora"]["scores"]) == set(tasks)
    assert set(record["methods"]["simple_avg"]["scores"]) == set(tasks)
    assert {record["adapters"][t]["id"] for t in tasks} <= {a.id for a in get_backbone(name).adapters.values()}


def test_builds_are_atomic_reproducible_and_not_repeated(rehearsal_env, tmp_path, monkeypatch):
    import time

    from merge_bench.backbones import rehearsal
    from merge_bench.io.files import dir_sha256

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(rehearsal, "save_random_lora", interrupted)
        with pytest.raises(KeyboardInterrupt):
            rehearsal.build_mirror("llama", tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no id, no marker

    root = rehearsal_env("llama")["MERGE_BENCH_MODELS"]
    marker = rehearsal.marker_path("llama", root)
    stamp, start = marker.stat().st_mtime_ns, time.perf_counter()
    assert str(rehearsal.build_mirror("llama-3.2-3b-instruct", root)) == root  # complete: returned at once
    assert time.perf_counter() - start < 2 and marker.stat().st_mtime_ns == stamp

    rehearsal.build_mirror("llama", tmp_path)  # the same seed gives the same files (the run cache keys on them)
    bb = get_backbone("llama")
    for model_id in [bb.base_id, *(a.id for a in bb.adapters.values())]:
        assert dir_sha256(tmp_path / model_id) == dir_sha256(f"{root}/{model_id}"), model_id
