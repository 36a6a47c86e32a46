"""Protocol v2 task draws through the run (`merge-bench run --n-tasks 1,2 --draws 2`) on the micro backbone:
every (variant, task) evaluated once, each draw's scores equal a plain run on its tasks, seeded methods seeded
with the draw index, and statistics over the draws."""
from __future__ import annotations

import json

import pytest

from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.bench.sweep import dry_run_sweep, plan_draws, run_sweep, sweep_table
from merge_bench.commands.run import parse_sizes
from test_run import count_evaluations


def test_a_sweep_evaluates_each_variant_once_and_equals_plain_runs(micro_backbone, cache, tmp_path, monkeypatch,
                                                                    capsys):
    cfg = RunConfig(backbone="micro", sizes=[1, 2], draws=2, methods=["simple_avg", "dare"], out=tmp_path / "runs")
    plan = dry_run_sweep(cfg, backbone=micro_backbone)
    calls = count_evaluations(monkeypatch)
    record = run_sweep(cfg, backbone=micro_backbone, progress=False)
    out = capsys.readouterr().out

    specs = plan_draws(micro_backbone, [1, 2], 2, 42)
    assert [(s["n"], s["index"], s["tasks"]) for s in plan["draws"]] == [(s.n, s.index, s.tasks) for s in specs]
    assert len(calls) == plan["evaluations"]["to_run"]                # shared reference rows run once
    used = {t for s in specs for t in s.tasks}
    merged_evals = sum(len(s.tasks) for s in specs) * 2
    assert len(calls) == 2 * len(used) + merged_evals
    for d in range(2):                                                # nested: N=1 ⊂ N=2 in every draw
        assert set(specs[d].tasks) <= set(specs[2 + d].tasks)

    assert record["record_version"] == 2 and list(record["sets"]) == ["1", "2"]
    calls.clear()
    for n in ("1", "2"):
        block = record["sets"][n]
        assert [d["index"] for d in block["draws"]] == [0, 1]
        for draw in block["draws"]:
            assert draw["record"]["methods"]["dare"]["params"]["seed"] == draw["index"]
            plain = run_benchmark(RunConfig(backbone="micro", tasks=draw["tasks"], methods=["simple_avg", "dare"],
                                            params={"dare": {"seed": draw["index"]}}, out=tmp_path / "plain"),
                                  backbone=micro_backbone, progress=False)
            by_name = {m["method"]: m for m in plain["methods"].values()}  # the plain run keys dare[seed=d]
            for key in ("simple_avg", "dare"):
                assert by_name[key]["scores"] == draw["record"]["methods"][key]["scores"]
        st = block["stats"]
        per_draw = [d["record"]["methods"]["dare"]["normalized"] for d in block["draws"]]
        assert st["methods"]["dare"]["per_draw"] == pytest.approx(per_draw, abs=1e-4)
        assert st["methods"]["dare"]["normalized"] == pytest.approx(sum(per_draw) / 2, abs=1e-4)
        assert st["n_draws"] == 2 and st["reference"] == "simple_avg"
    assert calls == []                                                # the plain runs read the sweep's cache
    assert sweep_table(record) in out and "tied for first" in out
    dare = record["sets"]["2"]["stats"]["methods"]["dare"]
    n2 = sweep_table(record).split("N = 2")[1].split("N = 3")[0]
    line = next(x for x in n2.splitlines() if x.startswith("dare"))
    assert "retained gain" in out and f"{dare['retained']:.2f}" in line   # the second score beside normalized
    saved = next((tmp_path / "runs").glob("micro-sweep-*.json"))
    assert json.loads(saved.read_text()) == json.loads(json.dumps(record))


def test_sweep_options_and_their_errors(micro_backbone):
    assert parse_sizes("4", None) == (4, None, None)
    assert parse_sizes("2,4,6", None) == (None, [2, 4, 6], None)
    assert parse_sizes("4", "3") == (None, [4], 3) and parse_sizes("2", "all")[2] == "all"
    with pytest.raises(ValueError, match="--draws 'x': expected a whole number"):
        parse_sizes("2", "x")
    with pytest.raises(ValueError, match="--draws needs the set sizes"):
        parse_sizes(None, "3")
    with pytest.raises(ValueError, match="dare.seed: in a sweep"):
        dry_run_sweep(RunConfig(backbone="micro", sizes=[2], draws=2, methods=["dare"],
                                params={"dare": {"seed": 3}}), backbone=micro_backbone)
    with pytest.raises(ValueError, match="not --tasks"):
        dry_run_sweep(RunConfig(backbone="micro", sizes=[2], tasks=["color"]), backbone=micro_backbone)
