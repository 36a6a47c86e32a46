"""Reproducible installs: setup installs the versions in merge_bench/constraints.txt, and a run whose stack
differs from them says so."""
from __future__ import annotations

from merge_bench.bench.provenance import LOCK, lock_mismatches, locked_versions, versions
from merge_bench.bench.run import RunConfig, run_benchmark


def test_the_lock_pins_the_evaluation_stack_and_setup_installed_it():
    pinned = locked_versions()
    for name in ("torch", "transformers", "lm-eval", "peft", "datasets", "accelerate", "tokenizers", "safetensors"):
        assert name in pinned, name
    assert pinned["torch"] == "2.13.0"
    assert lock_mismatches(versions()) == []  # this venv came from scripts/setup.sh, which installs with -c LOCK
    root = LOCK.parents[1]
    assert "-c merge_bench/constraints.txt" in (root / "scripts/setup.sh").read_text()
    assert '-c "$repo/merge_bench/constraints.txt"' in (root / "scripts/check_wheel.sh").read_text()


def test_a_version_other_than_the_lock_is_named():
    pinned = locked_versions()
    found = {"torch": pinned["torch"] + "+cpu", "transformers": "5.24.0", "lm_eval": pinned["lm-eval"], "vllm": None}
    assert lock_mismatches(found) == [f"transformers 5.24.0 (the lock pins {pinned['transformers']})"]


def test_a_run_on_another_stack_warns(micro_backbone, cache, tmp_path, monkeypatch, capsys):
    from merge_bench.bench import prepared

    monkeypatch.setattr(prepared, "versions", lambda: {**versions(), "transformers": "4.99.0"})
    run_benchmark(RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=tmp_path / "runs"),
                  backbone=micro_backbone, progress=False)
    err = capsys.readouterr().err
    assert "warning: this evaluation stack differs from merge-bench's lock (constraints.txt): transformers 4.99.0 " \
           f"(the lock pins {locked_versions()['transformers']})" in err
