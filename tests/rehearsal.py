"""Rehearsal mirrors for the tests: each backbone's mirror is built once per session (seconds) into one
temporary folder, and a test gets the environment that points the pipeline at it.

    from rehearsal import rehearsal_env  # noqa: F401  (the fixture)

    def test_x(rehearsal_env, monkeypatch):
        for key, value in rehearsal_env("flan").items():
            monkeypatch.setenv(key, value)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from merge_bench.backbones.rehearsal import build_mirror

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def mirror_env(backbone: str, root: Path, seed: int = 0) -> dict[str, str]:
    """Build (or find complete) the mirror of ``backbone`` under ``root``; the variables a run needs."""
    models = build_mirror(backbone, root, seed=seed, data_dir=FIXTURES)
    return {"MERGE_BENCH_MODELS": str(models), "MERGE_BENCH_DATA_DIR": str(FIXTURES)}


@pytest.fixture(scope="session")
def rehearsal_env(tmp_path_factory):
    """``rehearsal_env(backbone) -> {"MERGE_BENCH_MODELS": ..., "MERGE_BENCH_DATA_DIR": ...}``; one mirror
    folder per session, each backbone built on first use (a complete mirror returns at once)."""
    root = tmp_path_factory.mktemp("rehearsal_mirror")
    return lambda backbone: mirror_env(backbone, root)
