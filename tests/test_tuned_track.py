"""The tuned track end to end on the micro backbone (issue 13): each method searched on the validation variants,
then tested at its choice; the record keeps every tried configuration; a rerun replays from the cache."""
from __future__ import annotations

import pytest

from merge_bench.bench import tune as tune_module
from merge_bench.bench import worker
from merge_bench.bench.run import RunConfig, run_benchmark
from merge_bench.bench.sweep import run_sweep
from merge_bench.bench.scores import normalized
from merge_bench.bench.tune import BUDGET
from merge_bench.merging.methods import get_method

METHODS = ["simple_avg", "task_arithmetic", "ties"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tuned") / "cache"


@pytest.fixture(scope="module")
def record(micro_backbone, cache):
    cfg = RunConfig(backbone="micro", methods=METHODS, track="tuned", cache_dir=cache,
                    out=cache.parent / "runs")
    return run_benchmark(cfg, backbone=micro_backbone, progress=False)


def test_the_record_keeps_every_search(record):
    assert record["config"]["track"] == "tuned"
    tuning = record["tuning"]
    assert set(tuning) == set(METHODS)
    for key, search in tuning.items():
        cls = get_method(key)
        defaults = {p.name: p.default for p in cls.params}
        path = search["path"]
        assert 1 <= search["evaluations"] == len(path) <= BUDGET == search["budget"]
        assert path[0]["params"] == defaults                         # the search starts at the default
        best = max(p["validation_score"] for p in path)
        first_best = next(p for p in path if p["validation_score"] == best)
        assert search["chosen"] == first_best["params"]              # ties go to the earlier, the default first
        assert search["validation_score"] == best and search["seconds"] >= 0
        assert record["methods"][key]["params"] == search["chosen"]  # tested at its choice
        grid = dict(cls.search_grid())
        for p in path:                                                # only grid values are tried
            assert all(v == defaults[k] or v in grid.get(k, ()) for k, v in p["params"].items())
    assert tuning["simple_avg"]["evaluations"] == 1                  # no grid: the default only


def test_validation_scores_are_the_normalized_mean_of_cached_evaluations(micro_backbone, record, cache):
    from merge_bench.bench.cache import ResultCache
    from merge_bench.bench.run import Prepared
    from merge_bench.bench.plan import build_jobs
    from dataclasses import replace

    prep = Prepared(RunConfig(backbone="micro", methods=METHODS, cache_dir=cache), micro_backbone)
    tune_module.tune([prep], prep.executor(), progress=False)   # all cached: replays the searches
    val = {t: f"{t}_val" for t in prep.tasks}
    lora = {t: prep.cache.get(prep.key(prep.jobs[1 + i].variant, val[t]))["score"] for i, t in enumerate(prep.tasks)}
    m = next(m for m in prep.methods if m.key == "ties")
    for step in record["tuning"]["ties"]["path"]:
        job = build_jobs(prep.tasks, [replace(m, config=step["params"])], prep.adapter_sha)[-1]
        scores = {t: prep.cache.get(prep.key(job.variant, val[t]))["score"] for t in prep.tasks}
        assert step["validation_score"] == pytest.approx(normalized(scores, lora), abs=1e-4)
    assert isinstance(prep.cache, ResultCache)


def test_a_rerun_replays_the_searches_without_evaluating(micro_backbone, record, cache, monkeypatch):
    def no_evaluator(prep):
        raise AssertionError("a cached tuned run evaluated again")

    monkeypatch.setattr(worker, "make_evaluator", no_evaluator)
    again = run_benchmark(RunConfig(backbone="micro", methods=METHODS, track="tuned", cache_dir=cache,
                                    out=cache.parent / "runs"), backbone=micro_backbone, progress=False)
    assert {k: v["chosen"] for k, v in again["tuning"].items()} == {k: v["chosen"] for k, v in record["tuning"].items()}
    assert {k: v["scores"] for k, v in again["methods"].items()} == {k: v["scores"] for k, v in record["methods"].items()}


def test_a_choice_equal_to_the_default_shares_the_default_tracks_scores(micro_backbone, record, cache):
    default = run_benchmark(RunConfig(backbone="micro", methods=METHODS, cache_dir=cache, out=cache.parent / "runs"),
                            backbone=micro_backbone, progress=False)
    assert "tuning" not in default and default["config"]["track"] == "default"
    assert default["methods"]["simple_avg"]["scores"] == record["methods"]["simple_avg"]["scores"]


@pytest.fixture(scope="module")
def sweep(micro_backbone, cache):
    cfg = RunConfig(backbone="micro", sizes=[2], draws=2, methods=["simple_avg", "task_arithmetic"], track="tuned",
                    cache_dir=cache, out=cache.parent / "runs")
    return run_sweep(cfg, backbone=micro_backbone, progress=False)


def test_a_tuned_sweep_searches_every_draw(sweep):
    assert sweep["config"]["track"] == "tuned"
    for draw in sweep["sets"]["2"]["draws"]:
        r = draw["record"]
        assert set(r["tuning"]) == {"simple_avg", "task_arithmetic"}
        assert r["methods"]["task_arithmetic"]["params"] == r["tuning"]["task_arithmetic"]["chosen"]


def test_an_unknown_track_is_refused(micro_backbone, cache):
    with pytest.raises(ValueError, match="unknown track 'best'; expected one of default, tuned"):
        run_benchmark(RunConfig(backbone="micro", track="best", cache_dir=cache), backbone=micro_backbone)


def test_tuned_entries_carry_their_searches_and_validate(sweep, tmp_path, capsys):
    import json

    from merge_bench.cli import main
    from merge_bench.leaderboard.convert import entries_from_sweep
    from merge_bench.leaderboard.schema import seal
    from merge_bench.leaderboard.store import write_new
    from merge_bench.leaderboard.validate import validate_leaderboard

    root = tmp_path / "leaderboard"
    news = entries_from_sweep(sweep)
    for new in news:
        write_new(root, new)
    loaded, problems = validate_leaderboard(root)
    assert problems == [] and len(loaded) == 2
    ta = next(x.entry for x in loaded if x.entry.method.name == "task_arithmetic")
    assert ta.track == "tuned" and ta.data == "validation" and ta.method.params == {"lam": 0.4}
    draws = sweep["sets"]["2"]["draws"]
    assert [t.chosen for t in ta.tuning] == [d["record"]["tuning"]["task_arithmetic"]["chosen"] for d in draws]
    assert "/tuned/" in str(loaded[0].path)
    assert main(["leaderboard", "show", "--root", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["method"] == "task_arithmetic")
    assert row["track"] == "tuned" and row["tuning"]["chosen"] == [t.chosen for t in ta.tuning]
    assert row["tuning"]["evaluations"] == [t.evaluations for t in ta.tuning] and len(row["tuning"]["path"]) == 2
    assert main(["leaderboard", "show", "--root", str(root)]) == 0
    assert "tuned: " in capsys.readouterr().out

    path = next(x.path for x in loaded if x.entry.method.name == "task_arithmetic")
    fields = json.loads(path.read_text())
    fields.pop("entry_sha256")
    fields["tuning"][0]["chosen"] = {"lam": 9.0}          # a choice the search did not make
    path.write_text(seal(fields).to_json())
    assert "tuning[0].chosen: is not the first best configuration of the path" in "\n".join(
        map(str, validate_leaderboard(root)[1]))
