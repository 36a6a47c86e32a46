"""RegMean (issue 13): the maths against an independent dense computation on random Grams, the identity-Gram
case equal to simple_avg, factor path = dense path; the Grams collected by hooks equal XᵀX computed by hand;
the engine merges the micro LoRAs with calibration prompts and refuses to without."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from merge_bench.merging.delta import LowRank
from merge_bench.merging.engine import merge
from merge_bench.merging.methods import get_method


class FixedGrams:
    def __init__(self, grams):
        self.grams = grams

    def get(self, task, key):
        return self.grams[task]


def random_case(seed: int, n: int = 12, m: int = 10, r: int = 3, tasks: int = 3):
    g = torch.Generator().manual_seed(seed)
    deltas = [LowRank(torch.randn(n, r, generator=g), torch.randn(r, m, generator=g)) for _ in range(tasks)]
    grams = []
    for _ in range(tasks):
        x = torch.randn(40, m, generator=g, dtype=torch.float64)
        grams.append(x.T @ x)
    return deltas, grams


def reference(deltas, grams, a):
    """The paper's formula in numpy, float64: (Σ ΔW_t G̃_t)(Σ G̃_t)⁻¹."""
    tilde = [a * g.numpy() + (1 - a) * np.diag(np.diag(g.numpy())) for g in grams]
    num = sum((d.B.double() @ d.A.double()).numpy() @ t for d, t in zip(deltas, tilde))
    return num @ np.linalg.inv(sum(tilde))


@pytest.mark.parametrize("a", [0.9, 0.5, 1.0])
def test_regmean_equals_the_formula_in_factor_and_dense_space(a):
    deltas, grams = random_case(0)
    method = get_method("regmean")(a=a)
    method.use_calibration(FixedGrams(grams))
    low = method.merge(deltas, "w")
    assert isinstance(low, LowRank) and low.rank == sum(d.rank for d in deltas)
    want = reference(deltas, grams, a)
    scale = np.abs(want).max()
    assert np.abs(low.dense().double().numpy() - want).max() / scale <= 1e-5
    dense = method.merge([d.dense() for d in deltas], "w")
    assert np.abs(dense.double().numpy() - want).max() / scale <= 1e-5


def test_identity_grams_give_simple_avg():
    deltas, _ = random_case(1)
    method = get_method("regmean")()
    method.use_calibration(FixedGrams([torch.eye(10, dtype=torch.float64)] * 3))
    avg = get_method("simple_avg")().merge(deltas, "w")
    assert torch.allclose(method.merge(deltas, "w").dense(), avg.dense(), atol=1e-5)


def test_a_singular_gram_is_an_error_naming_the_layer():
    deltas, _ = random_case(2)
    x = torch.randn(2, 10, dtype=torch.float64)      # 2 tokens for 10 inputs: rank 2
    method = get_method("regmean")(a=1.0)
    method.use_calibration(FixedGrams([x.T @ x] * 3))
    with pytest.raises(ValueError, match="summed Gram of layer.q is singular"):
        method.merge(deltas, "layer.q")


def test_hooked_grams_are_xtx_and_shared_inputs_share_one(micro_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from merge_bench.merging.grams import collect

    model = AutoModelForCausalLM.from_pretrained(micro_llama, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(micro_llama)
    keys = [f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv"] + ["model.layers.1.mlp.down_proj.weight"]
    prompts = ["the quick brown fox", "yes no maybe"]
    grams, stored = collect(model, tok, prompts, keys)
    q, k, v, down = keys
    assert stored[q] == stored[k] == stored[v] and len(grams) == 2      # q, k, v read one input
    # by hand: the inputs of layer 0's attention are its input layernorm's outputs
    seen = []
    h = model.model.layers[0].input_layernorm.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.inference_mode():
        for text in prompts:
            model(**tok(text, return_tensors="pt", add_special_tokens=False))
    h.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()
    assert torch.allclose(grams[stored[q]], x.T @ x, rtol=1e-6, atol=1e-6)
    assert grams[stored[down]].shape == (128, 128)


def test_the_engine_merges_with_calibration_and_refuses_without(micro_llama, micro_loras, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))
    adapters = [str(p) for p in micro_loras]
    prompts = [["the quick brown fox"], ["yes no maybe"], ["guitar music"]][: len(adapters)]
    result = merge("regmean", adapters, base=micro_llama, calibration=prompts)
    assert result.is_lowrank and result.config == {"a": 0.9}
    assert len(list((tmp_path / "cache" / "grams").glob("*.safetensors"))) == len(adapters)
    again = merge("regmean", adapters, base=micro_llama, calibration=prompts)   # Grams read back from the cache
    for key, d in result.deltas.items():
        assert torch.equal(d.dense(), again.deltas[key].dense())
    with pytest.raises(ValueError, match="needs calibration data"):
        merge("regmean", adapters, base=micro_llama)
    with pytest.raises(ValueError, match="takes no calibration data"):
        merge("simple_avg", adapters, base=micro_llama, calibration=prompts)


def test_regmean_in_a_run_calibrates_on_each_tasks_data(micro_backbone, tmp_path, monkeypatch):
    from merge_bench.bench.run import RunConfig, run_benchmark

    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(backbone="micro", methods=["regmean", "simple_avg"], cache_dir=tmp_path / "results",
                    out=tmp_path / "runs")
    record = run_benchmark(cfg, backbone=micro_backbone, progress=False)
    row = record["methods"]["regmean"]
    assert row["data"] == "calibration" and record["methods"]["simple_avg"]["data"] == "none"
    assert set(row["scores"]) == set(record["config"]["tasks"])
    assert len(list((tmp_path / "cache" / "grams").glob("*.safetensors"))) == len(record["config"]["tasks"])


def test_merge_cli_takes_calibration_files(micro_llama, micro_loras, tmp_path, monkeypatch, capsys):
    from merge_bench.cli import main

    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))
    files = []
    for i in range(len(micro_loras)):
        f = tmp_path / f"p{i}.jsonl"
        f.write_text('{"prompt": "the quick brown fox"}\n"yes no maybe"\n')
        files.append(str(f))
    argv = ["merge", "--method", "regmean", "--adapters", *map(str, micro_loras), "--base", str(micro_llama),
            "--out", str(tmp_path / "out")]
    assert main(argv + ["--calibration", *files]) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert main(argv[:-1] + [str(tmp_path / "out2"), "--calibration", files[0]]) != 0
    assert "1 spec(s) for 3 adapter(s)" in capsys.readouterr().err


def test_every_layer_gets_a_gram_of_its_own_input_width(micro_llama):
    # hooks on every linear layer: an input freed mid-forward must never lend its id (and Gram) to another
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from merge_bench.merging.grams import collect

    model = AutoModelForCausalLM.from_pretrained(micro_llama, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(micro_llama)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n}
    grams, stored = collect(model, tok, ["the quick brown fox jumps", "yes"], [f"{n}.weight" for n in layers])
    for name, module in layers.items():
        assert grams[stored[f"{name}.weight"]].shape == (module.in_features, module.in_features), name
    assert len(grams) == 4 * model.config.num_hidden_layers   # attention in, o in, mlp in, down in
