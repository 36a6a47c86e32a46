"""The leaderboard against the real run pipeline: a micro backbone (micro Llama, 3 constant-answer
tasks, trained micro adapters) is run with ``run_benchmark``; its record becomes valid entries,
``submit`` writes one, and ``check`` reruns them from an empty result cache and finds the same numbers."""
from __future__ import annotations

import pytest

from merge_bench.backbones.micro import build_micro_suite

from merge_bench.leaderboard import entries_from_record, run_check, submit, validate_leaderboard, write_entry
from merge_bench.bench.run import RunConfig, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro_backbone(micro_llama, tmp_path_factory):
    return build_micro_suite(tmp_path_factory.mktemp("micro_suite"), micro_llama)


def test_real_record_to_entries_submit_and_check(micro_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "cache"))

    def runner(cfg: RunConfig) -> dict:
        return run_benchmark(cfg, backbone=micro_backbone, progress=False)

    cfg = RunConfig(backbone="micro", tasks=["color", "animal"], methods=["simple_avg", "task_arithmetic"],
                    params={"task_arithmetic": {"lam": 1.0}}, out=tmp_path / "runs")
    record = runner(cfg)
    root = tmp_path / "leaderboard"
    entries = entries_from_record(record)
    assert [e.method.key for e in entries] == ["simple_avg", "task_arithmetic[lam=1.0]"]
    for entry in entries:
        write_entry(root, entry)
    assert validate_leaderboard(root)[1] == []
    e = entries[1]
    assert e.task_set.tasks == ["animal", "color"] and e.method.params == {"lam": 1.0}
    assert e.provenance.tasks["color"].lm_eval_task == "micro_color" and e.provenance.merged_sha256
    assert e.scores == record["methods"]["task_arithmetic[lam=1.0]"]["scores"]

    result = submit("task_arithmetic", "micro", root=root, tasks=["color", "animal"], params={"lam": 0.5},
                    runner=runner, out=tmp_path / "runs")
    assert result.status == "written" and result.entry.method.key == "task_arithmetic[lam=0.5]"
    assert validate_leaderboard(root)[1] == []  # its reference rows agree with the first run's

    # A rerun from an empty cache recomputes every number; greedy decoding on CPU repeats exactly.
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path / "fresh-cache"))
    report = run_check([root], backbone="micro", runner=runner, out=tmp_path / "runs")
    assert report.ok, report.render()
    assert report.compared == 3 + 2 + 3 * 3  # pretrained (normalized + 2 tasks), LoRA, 3 methods
