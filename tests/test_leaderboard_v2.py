"""Leaderboard schema v2 on a real micro sweep: entries with their per-item files, validation that recomputes
every number from the items, group statistics for show --json, and a build with the v2 tables and plot."""
from __future__ import annotations

import json
import shutil

import pytest

from merge_bench.bench import stats
from merge_bench.bench.run import RunConfig
from merge_bench.bench.sweep import run_sweep
from merge_bench.cli import main
from merge_bench.leaderboard.build import build_leaderboard, validate_all
from merge_bench.leaderboard.sweeps import draws_of, entries_from_sweep, group_stats, validate_v2, write_new

METHODS = ["simple_avg", "dare", "ties"]


@pytest.fixture(scope="module")
def sweep_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("v2") / "cache"


@pytest.fixture(scope="module")
def sweep(micro_backbone, sweep_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERGE_BENCH_CACHE", str(sweep_cache))
        cfg = RunConfig(backbone="micro", sizes=[2, 3], draws=2, methods=METHODS, out=sweep_cache.parent / "runs")
        return run_sweep(cfg, backbone=micro_backbone, progress=False)


@pytest.fixture
def board(sweep, tmp_path):
    root = tmp_path / "leaderboard"
    for new in entries_from_sweep(sweep):
        write_new(root, new)
    return root


def test_entries_hold_every_draw_and_pin_their_items(sweep, board):
    loaded, problems = validate_v2(board)
    assert problems == [] and len(loaded) == 2 * len(METHODS)
    n2 = next(x.entry for x in loaded if x.entry.n_tasks == 2 and x.entry.method.name == "dare")
    block = sweep["sets"]["2"]
    assert [d.tasks for d in n2.draw_set.draws] == [d["tasks"] for d in block["draws"]]
    assert n2.draw_set.id.startswith("n2-d2-") and n2.track == "default" and n2.data == "none"
    assert "seed" not in n2.method.params                      # its seed is the draw index
    assert [r.scores for r in n2.per_draw] == [d["record"]["methods"]["dare"]["scores"] for d in block["draws"]]
    assert n2.result.normalized == pytest.approx(block["stats"]["methods"]["dare"]["normalized"])
    assert list(n2.result.ci95) == block["stats"]["methods"]["dare"]["normalized_ci95"]
    folder = next((board / "v2" / "micro" / "default").glob("n2-*"))
    assert sorted(p.name for p in folder.glob("*.json")) == ["dare.json", "simple_avg.json", "ties.json"]
    assert (folder / "items" / "reference.json").is_file() and len(list((folder / "items" / "methods").iterdir())) == 3


def test_group_statistics_equal_the_runs_and_show_json_has_the_fields(sweep, board, capsys):
    loaded, _ = validate_v2(board)
    groups = group_stats(loaded)
    assert [g.n_tasks for g in groups] == [2, 3]
    for g in groups:  # rebuilt from the items files alone, the statistics equal the run's own
        ran = sweep["sets"][str(g.n_tasks)]["stats"]
        for key in METHODS:
            assert g.stats["methods"][key] == ran["methods"][key]
        assert set(g.stats["tie_group"]) == set(ran["tie_group"])  # equal scores: order of input
    assert main(["leaderboard", "show", "--root", str(board), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and all(r["vs_default"] is None for r in rows)  # one track: nothing to compare
    need = {"backbone", "track", "n_tasks", "draws", "method", "params", "normalized", "ci95", "rank", "rank_ci95",
            "delta_vs_simple_avg", "delta_ci95"}
    assert all(need <= set(r) for r in rows)
    sa = next(r for r in rows if r["method"] == "simple_avg" and r["n_tasks"] == 2)
    assert sa["delta_vs_simple_avg"] == 0.0 and sa["delta_ci95"] == [0.0, 0.0]
    assert all(r["ci95"][0] <= r["normalized"] <= r["ci95"][1] for r in rows)
    assert {r["rank"] for r in rows if r["n_tasks"] == 3} <= {1, 2, 3}


def test_validation_recomputes_from_the_items_and_names_what_is_wrong(board):
    folder = next((board / "v2" / "micro" / "default").glob("n2-*"))
    items = folder / "items" / "methods" / "ties.json"
    data = json.loads(items.read_text())
    task = next(iter(data["draws"][0]["tasks"]))
    data["draws"][0]["tasks"][task][0] = 1 - data["draws"][0]["tasks"][task][0]
    items.write_text(json.dumps(data))
    entry = json.loads((folder / "dare.json").read_text())
    entry["result"]["normalized"] += 1
    (folder / "dare.json").write_text(json.dumps(entry))
    _, problems = validate_v2(board)
    text = "\n".join(map(str, problems))
    assert "ties.json: items.method: " in text and "the entry pins" in text
    assert "dare.json: entry_sha256: content hash mismatch" in text
    shutil.rmtree(folder / "items")
    _, problems = validate_v2(board)
    assert any("per-item file" in str(p) and "is missing" in str(p) for p in problems)


def test_draws_must_be_the_ones_the_seed_gives(micro_backbone, board, monkeypatch):
    import merge_bench.backbones as backbones
    from merge_bench.leaderboard.schema import seal_v2

    monkeypatch.setattr(backbones, "get_backbone", lambda name: micro_backbone)
    assert validate_v2(board)[1] == []
    path = next((board / "v2" / "micro" / "default").glob("n2-*")) / "ties.json"
    fields = json.loads(path.read_text())
    fields.pop("entry_sha256")
    fields["draw_set"]["seed"] = 7           # hand-picked draws passed off as seed 7's: same id, same numbers
    path.write_text(seal_v2(fields).to_json())
    text = "\n".join(map(str, validate_v2(board)[1]))
    assert "ties.json: draw_set.draws: are not the draws of seed 7" in text


def test_a_stated_aggregate_is_checked_against_a_fresh_bootstrap(board):
    loaded, _ = validate_v2(board)
    one = loaded[0]
    fresh = stats.bootstrap(draws_of([one]), B=one.entry.bootstrap.B, seed=one.entry.bootstrap.seed)
    assert fresh.methods[one.entry.method.key].normalized_ci95 == pytest.approx(one.entry.result.ci95, abs=1e-4)


def test_build_writes_v2_tables_page_and_band_plot(board):
    written = build_leaderboard(board)
    readme = (board / "README.md").read_text()
    assert "## Protocol v2" in readme and "Δ vs simple_avg" in readme and "What the intervals do not cover" in readme
    assert "tied for first" in readme.lower()
    plot = board / "plots" / "micro_default_v2_normalized_vs_n.png"
    assert plot in written and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (board / "index.html").read_text()
    assert 'class="v2group"' in page and "tied" in page
    assert (board / "entry.v2.schema.json").is_file()
    _, _, problems = validate_all(board)
    assert problems == []


def test_a_one_method_submission_equals_its_row_of_the_full_sweep(micro_backbone, board, sweep_cache, monkeypatch,
                                                                   tmp_path):
    from merge_bench.leaderboard.submit import submit_sweep

    monkeypatch.setenv("MERGE_BENCH_CACHE", str(sweep_cache))  # the sweep's evaluations, read back
    results = submit_sweep("ties", "micro", root=board, sizes=[2, 3], draws=2, out=tmp_path / "runs",
                           runner=lambda c: run_sweep(c, backbone=micro_backbone, progress=False))
    assert [r.status for r in results] == ["unchanged", "unchanged"]  # its own CI does not depend on the others
    with pytest.raises(ValueError, match="dare.seed: in a sweep"):
        submit_sweep("dare", "micro", root=board, sizes=[2], draws=2, params={"seed": 1},
                     runner=lambda c: run_sweep(c, backbone=micro_backbone, progress=False))


def test_check_reruns_the_sweep_and_counts_changed_items(micro_backbone, board, tmp_path):
    from merge_bench.leaderboard.check_v2 import run_check_v2

    paths = sorted((board / "v2" / "micro" / "default").glob("n2-*/*.json"))
    report = run_check_v2(paths, tolerance=0.5, out=tmp_path / "runs",
                          runner=lambda c: run_sweep(c, backbone=micro_backbone, progress=False))
    assert report.ok, report.render()
    assert report.compared > 30 and any("4 of 4 per-item files hash as pinned (an exact reproduction)" in n
                                        for n in report.notes)

    task = sorted(json.loads(paths[-1].read_text())["per_draw"][0]["scores"])[0]   # a task of draw 0

    def flipping(c):  # one answer of ties flips: its score and its items both move
        record = run_sweep(c, backbone=micro_backbone, progress=False)
        draw = record["sets"]["2"]["draws"][0]["record"]
        items = draw["per_item"]["methods"]["ties"][task]
        items[0] = 1.0 - items[0]
        draw["methods"]["ties"]["scores"][task] = 100 * sum(items) / len(items)
        return record

    report = run_check_v2(paths, tolerance=0.5, out=tmp_path / "runs", runner=flipping)
    assert {(d.row, d.field) for d in report.differences} == {("ties", f"d0 {task}"),
                                                              ("ties", f"d0 {task} items changed (points)")}


def test_flips_that_cancel_in_the_score_still_count_as_changed_items():
    from merge_bench.leaderboard.check import CheckReport
    from merge_bench.leaderboard.check_v2 import _items

    report = CheckReport([], 0, [], 0.5)
    _items(report, "x", "m", "d0 t", [1, 0, 1, 0], [0, 1, 1, 0], 0.5)   # same mean, two items moved: 50 points
    _items(report, "x", "m", "d0 u", [1, 0, 1, 0], [1, 0, 1, 0], 0.5)
    assert [(d.field, d.now) for d in report.differences] == [("d0 t items changed (points)", 50.0)]
    assert report.compared == 2


def test_the_page_shades_the_methods_tied_for_first_in_chromium(board, tmp_path):
    import re
    import subprocess

    import numpy as np
    from matplotlib.image import imread
    from test_leaderboard_build import _chromium, render

    build_leaderboard(board)
    page = board / "index.html"
    dom = render(page, "", tmp_path)                                  # the page script still runs to the end
    assert dom.ready
    html = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           f"--user-data-dir={tmp_path / 'p1'}", page.as_uri()], capture_output=True, text=True,
                          timeout=120).stdout
    loaded, _ = validate_v2(board)
    tied = sum(len(g.stats["tie_group"]) for g in group_stats(loaded))
    assert len(re.findall(r'<tr class="method tied"', html)) == tied > 0
    shot = tmp_path / "page.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1600,2400", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = (imread(shot)[..., :3] * 255).round()
    shade = np.all(np.abs(pixels - np.array([0xE3, 0xF1, 0xE6])) <= 2, axis=-1)
    assert shade.sum() > 1000, "no row is drawn with the tie shading"
