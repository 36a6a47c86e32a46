import os
from pathlib import Path

import pytest

# Never touch a hub: everything the tests use is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from merge_bench.backbones.micro import build_micro_llama, build_random_lora  # noqa: E402


@pytest.fixture(scope="session")
def micro_llama(tmp_path_factory) -> Path:
    """A saved micro Llama directory (2 layers, hidden 64, own tokenizer)."""
    return build_micro_llama(tmp_path_factory.mktemp("micro_llama"))


@pytest.fixture(scope="session")
def micro_loras(micro_llama, tmp_path_factory) -> list[Path]:
    """Three random rank-4 q,v LoRA adapters for the micro Llama."""
    root = tmp_path_factory.mktemp("micro_loras")
    return [build_random_lora(micro_llama, root / f"task{i}", seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def micro_backbone(micro_llama, tmp_path_factory):
    """The micro suite (3 constant-answer tasks, trained micro LoRAs) on the session's micro Llama."""
    from merge_bench.backbones.micro import build_micro_suite

    return build_micro_suite(tmp_path_factory.mktemp("micro_suite"), micro_llama)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh $MERGE_BENCH_CACHE for the test."""
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
