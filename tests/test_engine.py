"""The merge engine and its outputs: PEFT and full checkpoints that reload with the same logits as
PEFT's own merge, rank padding, apply_to/restore, provenance, streaming."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from merge_bench.backbones.micro import build_random_lora
from safetensors import safe_open
from safetensors.torch import load_file

import merge_bench
from merge_bench.merging.delta import LowRank
from merge_bench.merging.engine import merge as engine_merge
from merge_bench.io.files import sha256_file, sha256_files
from merge_bench.merging.writers import VLLM_RANKS, _padded_rank

IDS = torch.tensor([[1, 17, 42, 99, 7, 250, 3, 311, 64, 5, 128, 2]])


def causal_lm(path: Path, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


@pytest.fixture(scope="module")
def peft_avg_logits(micro_llama, micro_loras) -> torch.Tensor:
    """PEFT's own merge: add_weighted_adapter('cat') with weights 1/N gives exactly Σ τ_t / N."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(causal_lm(micro_llama), micro_loras[0], adapter_name="t0")
    for i, path in enumerate(micro_loras[1:], start=1):
        model.load_adapter(path, adapter_name=f"t{i}")
    names = [f"t{i}" for i in range(len(micro_loras))]
    model.add_weighted_adapter(names, [1 / len(names)] * len(names), "avg", combination_type="cat")
    model.set_adapter("avg")
    return logits(model)


def test_peft_and_full_outputs_match_peft_merge(micro_llama, micro_loras, peft_avg_logits, tmp_path):
    from peft import PeftModel

    adapters = [str(p) for p in micro_loras]
    peft_out = merge_bench.merge("simple_avg", adapters, base=micro_llama, out=tmp_path / "peft")
    full_out = merge_bench.merge("simple_avg", adapters, base=micro_llama, out=tmp_path / "full", format="full")
    assert peft_out.output.format == "peft" and full_out.output.format == "full"
    via_peft = logits(PeftModel.from_pretrained(causal_lm(micro_llama), tmp_path / "peft"))
    via_full = logits(causal_lm(tmp_path / "full"))
    assert (via_peft - logits(causal_lm(micro_llama))).abs().max() > 1e-2  # the merge changes the model
    torch.testing.assert_close(via_peft, via_full, rtol=0, atol=1e-4)
    torch.testing.assert_close(via_peft, peft_avg_logits, rtol=0, atol=1e-4)
    # the full checkpoint is complete: shards + index, tokenizer and generation config carried over
    names = {p.name for p in (tmp_path / "full").iterdir()}
    assert {"model.safetensors.index.json", "config.json", "tokenizer.json", "generation_config.json",
            "merge_config.json", "README.md"} <= names
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "full").eos_token == "<|im_end|>"


def test_rank_padding_to_vllm_ranks(micro_llama, micro_loras, tmp_path):
    merge_bench.merge("task_arithmetic", [str(p) for p in micro_loras], out=tmp_path / "three")  # no base needed
    config = json.loads((tmp_path / "three" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 16  # 3 × rank 4 = 12 → 16, scale 1
    assert sorted(config["target_modules"]) == [f"model.layers.{i}.self_attn.{m}_proj" for i in range(2) for m in "qv"]
    sd = load_file(tmp_path / "three" / "adapter_model.safetensors")
    A = sd["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    B = sd["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert A.shape == (16, 64) and B.shape == (64, 16)
    assert torch.count_nonzero(A[12:]) == 0 and torch.count_nonzero(B[:, 12:]) == 0
    merge_bench.merge("simple_avg", [str(micro_loras[0])], out=tmp_path / "one")
    assert json.loads((tmp_path / "one" / "adapter_config.json").read_text())["r"] == 8
    assert [_padded_rank(r) for r in (0, 8, 9, 300, 321, 512)] == [8, 8, 16, 320, 512, 512]
    with pytest.raises(ValueError, match="rank 513, above the largest LoRA rank vLLM serves.*--format full"):
        _padded_rank(513)
    assert VLLM_RANKS[-1] == 512


def write_plugin(tmp_path: Path) -> Path:
    path = tmp_path / "plugin_methods.py"
    path.write_text(textwrap.dedent('''
        from merge_bench.merging.delta import LowRank, concat, dense
        from merge_bench.merging.methods import MergeMethod, Param

        class FailsLate(MergeMethod):
            name = "fails_late"
            description = "raises on the third matrix"
            lowrank = True
            def merge(self, deltas, key):
                self.seen = getattr(self, "seen", 0) + 1
                if self.seen == 3:
                    raise ValueError(f"deliberate failure at {key}")
                return concat(deltas)

        class Wide(MergeMethod):
            name = "wide"
            description = "the sum, written with a redundant rank of 100 (> min(n, m))"
            lowrank = True
            def merge(self, deltas, key):
                total = concat(deltas)
                reps = -(-100 // total.rank)
                return concat([LowRank(total.B / reps, total.A)] * reps)

        class TwoPass(MergeMethod):
            name = "two_pass"
            description = "Frobenius-weighted sum; checks that prepare can iterate twice"
            params = (Param("scale", 1.0, "overall factor"),)
            def prepare(self, modules):
                first = [(k, [dense(d).norm() for d in ds]) for k, ds in modules()]
                second = [(k, [dense(d).norm() for d in ds]) for k, ds in modules()]
                assert first == second and len(first) > 0
                self.total = sum(sum(n) for _, n in first)
            def merge(self, deltas, key):
                return self.scale * sum(dense(d) for d in deltas) / float(self.total)
    '''))
    return path


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    from merge_bench.cli import main

    capsys.readouterr()
    code = main(["merge", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_bad_inputs_exit_nonzero_and_leave_nothing(micro_llama, micro_loras, tmp_path, capsys):
    out = tmp_path / "out"
    good = [str(micro_loras[0]), str(micro_loras[1])]
    truncated = tmp_path / "trunc"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_bytes((micro_loras[2] / "adapter_config.json").read_bytes())
    data = (micro_loras[2] / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[:-50])
    nan = tmp_path / "nan"
    nan.mkdir()
    (nan / "adapter_config.json").write_bytes((micro_loras[2] / "adapter_config.json").read_bytes())
    sd = load_file(micro_loras[2] / "adapter_model.safetensors")
    sd["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"][0, 0] = float("inf")
    from safetensors.torch import save_file

    save_file(sd, nan / "adapter_model.safetensors")
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other_base"
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(other)
    small = build_random_lora(other, tmp_path / "small", seed=1)
    plugin = write_plugin(tmp_path)
    cases = [
        (["--adapters", *good, str(truncated)], "trunc/adapter_model.safetensors: not a readable safetensors"),
        (["--adapters", *good, str(nan)], "nan/adapter_model.safetensors: tensor 'base_model.model.model.layers.0"
                                          ".self_attn.q_proj.lora_A.weight' has 1 NaN/Inf"),
        (["--adapters", *good, str(small)], "expected shape (64, 64)"),
        (["--adapters", *good, "--base", str(other)], "expected shape (32, 32) (from base"),
        (["--adapters", *good, str(tmp_path / "nope")], "does not exist"),
        (["--method", "no_such_method", "--adapters", *good], "unknown method 'no_such_method'; valid methods:"),
        (["--method", "task_arithmetic", "--param", "lambda=0.3", "--adapters", *good],
         "has no parameter 'lambda'; its parameters are ['lam']"),
        (["--method", "task_arithmetic", "--param", "lam", "--adapters", *good],
         "bad --param 'lam': expected key=value"),
        (["--method", "task_arithmetic", "--param", "lam=big", "--adapters", *good], "cannot read 'big' as float"),
        (["--method", f"{plugin}:FailsLate", "--adapters", *good],
         "deliberate failure at model.layers.1.self_attn.q_proj"),
        (["--method", "task_arithmetic", "--format", "full", "--adapters", *good], "needs the base model (--base)"),
        (["--adapters", *good, str(micro_llama)], "is a full checkpoint: its task vector θ_ft − θ_0 needs the base"),
    ]
    for args, message in cases:
        if "--method" not in args:
            args = ["--method", "simple_avg", *args]
        code, err = run_cli([*args, "--out", str(out)], capsys)
        assert code == 2, (args, err)
        assert message in err, (message, err)
        assert err.startswith("merge-bench merge: error: ")
        assert leftovers(tmp_path, "out") == [], args


def test_overwrite(micro_loras, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--method", "simple_avg", "--adapters", str(micro_loras[0]), str(micro_loras[1]), "--out", str(out)]
    code, err = run_cli(args, capsys)
    assert code == 2 and "already exists; pass --overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    code, _ = run_cli([*args, "--overwrite"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                      "merge_config.json"]
    assert leftovers(tmp_path, "out") == ["out"]
    plugin = write_plugin(tmp_path)  # a failing overwrite keeps the previous output
    code, err = run_cli(["--method", f"{plugin}:FailsLate", "--adapters", *map(str, micro_loras),
                         "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and (out / "adapter_model.safetensors").is_file() and leftovers(tmp_path, "out") == ["out"]


def test_cli_summary_line(micro_llama, micro_loras, tmp_path, capsys):
    from merge_bench.cli import main

    code = main(["merge", "--method", "task_arithmetic", "--param", "lam=0.5", "--adapters", *map(str, micro_loras),
                 "--out", str(tmp_path / "m"), "--base", str(micro_llama)])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("merged 3 inputs with task_arithmetic: 4 matrices (low-rank, rank 16); wrote peft to ")
    config = json.loads((tmp_path / "m" / "merge_config.json").read_text())
    assert config["params"] == {"lam": 0.5}


def test_apply_to_and_restore_exact(micro_llama, micro_loras, tmp_path):
    result = merge_bench.merge("simple_avg", [str(p) for p in micro_loras], base=micro_llama)
    merge_bench.merge("simple_avg", [str(p) for p in micro_loras], base=micro_llama, out=tmp_path / "full",
                      format="full")
    model = causal_lm(micro_llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with result.apply_to(model):
        key = "model.layers.1.self_attn.v_proj.weight"
        torch.testing.assert_close(model.get_parameter(key).detach(), before[key] + result.deltas[key].dense())
        torch.testing.assert_close(logits(model), logits(causal_lm(tmp_path / "full")), rtol=0, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    half = causal_lm(micro_llama, dtype=torch.bfloat16)
    original = half.get_parameter(key).detach().clone()
    handle = result.apply_to(half)
    assert half.get_parameter(key).dtype == torch.bfloat16 and not torch.equal(half.get_parameter(key), original)
    handle.restore()
    assert torch.equal(half.get_parameter(key), original)


def test_merge_config_records_hashes(micro_llama, micro_loras, tmp_path):
    out = tmp_path / "m"
    merge_bench.merge("task_arithmetic", [str(p) for p in micro_loras], params={"lam": 0.25}, base=micro_llama,
                      out=out, dtype="bfloat16")
    config = json.loads((out / "merge_config.json").read_text())
    assert config["method"] == "task_arithmetic" and config["params"] == {"lam": 0.25}
    assert config["base"] == str(micro_llama) and config["dtype"] == "bfloat16" and config["rank"] == 16
    assert set(config["versions"]) >= {"merge-bench", "torch", "transformers", "peft"}
    assert config["outputs"] == {name: sha256_file(out / name) for name in config["outputs"]}
    assert set(config["outputs"]) == {"adapter_config.json", "adapter_model.safetensors"}
    for record, path in zip(config["inputs"], micro_loras):
        digest, files = sha256_files(path, [path / "adapter_config.json", path / "adapter_model.safetensors"])
        assert record == {"path": str(path), "resolved": str(path), "kind": "lora", "sha256": digest, "files": files}
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_full_checkpoint_inputs_give_dense_full_output(micro_llama, micro_loras, tmp_path):
    """Full fine-tunes (here: LoRAs merged into the weights) as inputs; auto writes a full checkpoint."""
    from peft import PeftModel

    fts = []
    for i, lora in enumerate(micro_loras[:2]):
        PeftModel.from_pretrained(causal_lm(micro_llama), lora).merge_and_unload().save_pretrained(tmp_path / f"ft{i}")
        fts.append(str(tmp_path / f"ft{i}"))
    with pytest.raises(ValueError, match="--format peft needs a low-rank result, but its inputs include full"):
        merge_bench.merge("simple_avg", fts, base=micro_llama, out=tmp_path / "x", format="peft")
    assert not (tmp_path / "x").exists()
    mixed = merge_bench.merge("simple_avg", [fts[0], str(micro_loras[1])], base=micro_llama, targets="q_proj,v_proj")
    lora = merge_bench.merge("simple_avg", [str(p) for p in micro_loras[:2]], base=micro_llama)
    assert not mixed.is_lowrank and mixed.keys == lora.keys
    for key in lora.keys:
        torch.testing.assert_close(mixed.deltas[key], lora.deltas[key].dense(), rtol=0, atol=1e-6)
    merge_bench.merge("simple_avg", fts, base=micro_llama, out=tmp_path / "full", dtype="bfloat16")
    assert json.loads((tmp_path / "full" / "config.json").read_text())["dtype"] == "bfloat16"
    full = causal_lm(tmp_path / "full")
    assert full.dtype == torch.bfloat16
    merge_bench.merge("simple_avg", fts, base=micro_llama, out=tmp_path / "delta", format="delta")
    stored = load_file(tmp_path / "delta" / "delta.safetensors")
    assert set(stored) == set(lora.keys)
    for key in lora.keys:
        torch.testing.assert_close(stored[key], lora.deltas[key].dense(), rtol=0, atol=1e-6)


def test_prepare_gets_a_reiterable_stream_and_plugins_load(micro_llama, micro_loras, tmp_path):
    plugin = write_plugin(tmp_path)
    result = merge_bench.merge(f"{plugin}:TwoPass", [str(p) for p in micro_loras], params={"scale": "2"})
    total = sum(float(d.dense().norm()) for p in micro_loras for d in
                merge_bench.merge("simple_avg", [str(p)]).deltas.values())
    key = result.keys[0]
    expected = 2.0 * sum(merge_bench.merge("simple_avg", [str(p)]).deltas[key].dense() for p in micro_loras) / total
    torch.testing.assert_close(result.deltas[key], expected)


def test_wide_rank_is_recompressed_exactly(micro_llama, micro_loras, tmp_path):
    plugin = write_plugin(tmp_path)
    result = merge_bench.merge(f"{plugin}:Wide", [str(p) for p in micro_loras], out=tmp_path / "w")
    assert result.deltas[result.keys[0]].rank > 64  # kept as computed
    assert json.loads((tmp_path / "w" / "adapter_config.json").read_text())["r"] == 64
    sd = load_file(tmp_path / "w" / "adapter_model.safetensors")
    for key, delta in result.deltas.items():
        module = key[: -len(".weight")]
        product = sd[f"base_model.model.{module}.lora_B.weight"] @ sd[f"base_model.model.{module}.lora_A.weight"]
        torch.testing.assert_close(product, delta.dense(), rtol=0, atol=1e-6)


def test_streamed_result_is_lazy_and_read_once(micro_loras, tmp_path):
    plugin = write_plugin(tmp_path)
    result = engine_merge(f"{plugin}:FailsLate", [str(p) for p in micro_loras], stream=True)
    items = result.items()
    assert [next(items)[0], next(items)[0]] == result.keys[:2]  # nothing ran before this; 3rd would fail
    with pytest.raises(ValueError, match="already consumed"):
        next(result.items())
    eager = engine_merge("simple_avg", [str(p) for p in micro_loras])
    assert all(isinstance(d, LowRank) and d.rank == 12 for d in eager.deltas.values())


def test_fan_in_fan_out_outputs_gpt2(tmp_path):
    """Conv1D (GPT-2) adapters: the merged PEFT adapter keeps fan_in_fan_out and equals the full merge."""
    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=400, n_positions=32)).save_pretrained(base)
    loras = [str(build_random_lora(base, tmp_path / f"ff{i}", seed=i, targets=("c_attn", "c_proj"),
                                   fan_in_fan_out=True)) for i in range(2)]
    merge_bench.merge("simple_avg", loras, base=base, out=tmp_path / "peft")
    merge_bench.merge("simple_avg", loras, base=base, out=tmp_path / "full", format="full")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    via_peft = logits(PeftModel.from_pretrained(causal_lm(base), tmp_path / "peft"))
    reference = PeftModel.from_pretrained(causal_lm(base), loras[0], adapter_name="a")
    reference.load_adapter(loras[1], adapter_name="b")
    reference.add_weighted_adapter(["a", "b"], [0.5, 0.5], "avg", combination_type="cat")
    reference.set_adapter("avg")
    torch.testing.assert_close(via_peft, logits(causal_lm(tmp_path / "full")), rtol=0, atol=1e-4)
    torch.testing.assert_close(via_peft, logits(reference), rtol=0, atol=1e-4)


def test_apply_to_consumes_a_streamed_result(micro_llama, micro_loras):
    eager = engine_merge("simple_avg", [str(p) for p in micro_loras])
    streamed = engine_merge("simple_avg", [str(p) for p in micro_loras], stream=True)
    a, b = causal_lm(micro_llama), causal_lm(micro_llama)
    reference = logits(a)
    with eager.apply_to(a), streamed.apply_to(b):
        torch.testing.assert_close(logits(a), logits(b), rtol=0, atol=0)
        assert not torch.allclose(logits(a), reference)
    assert torch.equal(logits(b), reference)
    with pytest.raises(ValueError, match="already consumed"):
        streamed.apply_to(b)


def test_stream_writer_checks_the_plan(tmp_path):
    from merge_bench.io.tensors import SafetensorsStreamWriter

    entries = [("a", torch.float32, (2, 3)), ("b", torch.bfloat16, (4,))]
    with SafetensorsStreamWriter(tmp_path / "x.safetensors", entries) as writer:
        writer.write("a", torch.arange(6.0).reshape(2, 3))
        with pytest.raises(ValueError, match=r"expected tensor b torch.bfloat16 \(4,\) next, got b torch.float32"):
            writer.write("b", torch.ones(4))
        writer.write("b", torch.ones(4, dtype=torch.bfloat16))
    assert writer.sha256 == sha256_file(tmp_path / "x.safetensors")
    sd = load_file(tmp_path / "x.safetensors")
    assert torch.equal(sd["a"], torch.arange(6.0).reshape(2, 3)) and sd["b"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="wrote 1 of 2 planned tensors"):
        with SafetensorsStreamWriter(tmp_path / "y.safetensors", entries) as writer:
            writer.write("a", torch.zeros(2, 3))


def test_seq2seq_t5_peft_and_full_agree(tmp_path):
    """The flan-t5 layout: LoRA on SelfAttention/EncDecAttention q and v; both outputs give one model."""
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

    base = tmp_path / "t5"
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=400, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                        decoder_start_token_id=0)).save_pretrained(base)
    from peft import LoraConfig, get_peft_model

    loras = []
    for i in range(2):  # micro.build_random_lora loads causal LMs only
        model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"))
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        model.save_pretrained(tmp_path / f"t{i}")
        loras.append(str(tmp_path / f"t{i}"))
    merge_bench.merge("simple_avg", loras, base=base, out=tmp_path / "peft")
    merge_bench.merge("simple_avg", loras, base=base, out=tmp_path / "full", format="full")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
    assert "T5ForConditionalGeneration.from_pretrained" in (tmp_path / "full" / "README.md").read_text()

    def t5_logits(model):
        with torch.no_grad():
            return model.eval()(input_ids=IDS, decoder_input_ids=IDS[:, :5]).logits

    via_peft = t5_logits(PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base), tmp_path / "peft"))
    via_full = t5_logits(AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "full"))
    assert (via_full - t5_logits(AutoModelForSeq2SeqLM.from_pretrained(base))).abs().max() > 1e-3
    torch.testing.assert_close(via_peft, via_full, rtol=0, atol=1e-4)


def test_threads_are_capped_during_the_merge_and_restored(micro_loras, tmp_path):
    plugin = tmp_path / "threads_probe.py"
    plugin.write_text(textwrap.dedent('''
        import torch
        from merge_bench.merging.delta import concat
        from merge_bench.merging.methods import MergeMethod

        class Probe(MergeMethod):
            name = "probe"
            description = "the sum scaled by torch's thread count during merge"
            lowrank = True
            def merge(self, deltas, key):
                return concat(deltas, [float(torch.get_num_threads())] * len(deltas))
    '''))
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    result = merge_bench.merge(f"{plugin}:Probe", [str(p) for p in micro_loras], threads=target)
    plain = merge_bench.merge("task_arithmetic", [str(p) for p in micro_loras], params={"lam": 1.0})
    for key in plain.keys:
        torch.testing.assert_close(result.deltas[key].dense(), target * plain.deltas[key].dense())
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be at least 1"):
        merge_bench.merge("simple_avg", [str(micro_loras[0])], threads=0)
    assert torch.get_num_threads() == before
