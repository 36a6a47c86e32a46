"""The dry run shows each task's protocol n beside the items its data gives, and warns where the data holds fewer."""
from merge_bench.bench.plan import protocol_n
from merge_bench.evaluation.tasks import get_task
from rehearsal import rehearsal_env  # noqa: F401  (a fixture)


def test_protocol_n_of_each_sample_spec():
    def n(name: str) -> int | None:
        task = get_task(name)
        return protocol_n(task.sample, len(task.labels))

    assert n("flan_mnli") == 1200  # bal 400 × 3 labels
    assert n("mistral_wino") == 200  # rand 200
    assert n("mistral_ethos") is None  # all
    assert n("flan_rte") is None  # bal all
    assert protocol_n("bal 10", 0) is None  # classes not declared: unknown


def test_dry_run_warns_where_the_data_holds_fewer_items(rehearsal_env, monkeypatch, capsys, tmp_path):
    from merge_bench.bench.run import RunConfig, dry_run

    for key, value in rehearsal_env("mistral").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MERGE_BENCH_CACHE", str(tmp_path))
    plan = dry_run(RunConfig(backbone="mistral", tasks=["ethos", "wino"], methods=["simple_avg"], device="cpu",
                             backend="hf"))
    assert plan["task_sizes"]["wino"] == {"sample": "rand 200", "protocol_n": 200, "n": 3}
    assert plan["task_sizes"]["ethos"] == {"sample": "all", "protocol_n": None, "n": 4}
    out = capsys.readouterr().out
    assert "items (protocol n → what the data gives): ethos all: all → 4; wino rand 200: 200 → 3" in out
    assert "warning: the data holds fewer items than the protocol asks for on 1 task(s): wino (3 of 200)" in out
