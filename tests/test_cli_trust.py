"""What a careful user of the CLI relies on: a finished run is never lost, errors name their culprit in one
line (no traceback), silent successes fail or warn, and plans count what they hide."""
from __future__ import annotations

import json

import pytest

from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.cli import main


def count_evaluations(monkeypatch) -> list:
    from merge_bench.evaluation.hf_backend import HFEvaluator

    calls: list = []
    original = HFEvaluator.evaluate
    monkeypatch.setattr(HFEvaluator, "evaluate", lambda self, shorts: calls.append(shorts) or original(self, shorts))
    return calls


# --- a finished run is never lost -------------------------------------------------------------------------

def test_an_out_that_is_a_file_is_refused_before_the_first_evaluation(micro_backbone, cache, tmp_path, monkeypatch,
                                                                        capsys):
    calls = count_evaluations(monkeypatch)
    taken = tmp_path / "F"
    taken.write_text("mine\n")
    assert main(["run", "--backbone", "micro", "--tasks", "color", "--methods", "simple_avg", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {taken} is a file" in err and "Traceback" not in err
    assert calls == [] and taken.read_text() == "mine\n"
    with pytest.raises(ValueError, match="its parent"):  # a path below a file cannot become a directory
        run_benchmark(RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=taken / "runs"),
                      backbone=micro_backbone, progress=False)
    assert calls == []


def test_a_record_that_cannot_be_written_still_prints_its_table_and_lands_somewhere_named(
        micro_backbone, cache, tmp_path, monkeypatch, capsys):
    from merge_bench.bench import outputs

    out_dir = tmp_path / "runs"
    real_write = outputs.write_json_atomic

    def failing(path, obj):
        if out_dir in path.parents:  # the disk under --out filled up during the run
            raise OSError(28, "No space left on device")
        real_write(path, obj)

    monkeypatch.setattr(outputs, "write_json_atomic", failing)
    record = run_benchmark(RunConfig(backbone="micro", tasks=["color"], methods=["simple_avg"], out=out_dir),
                           backbone=micro_backbone, progress=False)
    out, err = capsys.readouterr()
    assert "simple_avg" in out  # the table
    saved = list((cache / "runs").glob("micro-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["record_sha256"] == record["record_sha256"]
    assert f"could not write the run record to {out_dir}" in err and "No space left on device" in err
    assert f"saved it to {saved[0]}" in err and f"run record: {saved[0]}" in err
    assert list(out_dir.glob("*.json")) == []
