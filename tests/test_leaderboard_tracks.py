"""The two tracks side by side: on micro sweeps of both tracks over the same draws, the
paired Δ tuned − default against independent computations, the refusal to pair two different stacks, the
``show --json`` shape, the generated README and page; and the committed leaderboard's comparison."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from merge_bench.bench import stats
from merge_bench.bench.run import RunConfig
from merge_bench.bench.sweep import run_sweep
from merge_bench.cli import main
from merge_bench.leaderboard import default_root
from merge_bench.leaderboard.build import build_leaderboard
from merge_bench.leaderboard.convert import entries_from_sweep
from merge_bench.leaderboard.groups import group_stats
from merge_bench.leaderboard.schema import BootstrapInfo, seal
from merge_bench.leaderboard.store import write_new
from merge_bench.leaderboard.validate import Loaded, draws_of, validate_leaderboard
from merge_bench.leaderboard.tracks import TRACKS, compare_tracks

METHODS = ["simple_avg", "task_arithmetic", "ties"]


@pytest.fixture(scope="module")
def records(micro_backbone, tmp_path_factory):
    """One sweep per track on the same draws (N = 2, two draws), sharing a result cache."""
    cache = tmp_path_factory.mktemp("tracks") / "cache"
    return {track: run_sweep(RunConfig(backbone="micro", sizes=[2], draws=2, methods=METHODS, track=track,
                                       cache_dir=cache, out=cache.parent / "runs"),
                             backbone=micro_backbone, progress=False)
            for track in TRACKS}


@pytest.fixture
def board(records, tmp_path):
    root = tmp_path / "leaderboard"
    for record in records.values():
        for new in entries_from_sweep(record):
            write_new(root, new)
    return root


def _loaded(root):
    loaded, problems = validate_leaderboard(root)
    assert problems == [], "\n".join(map(str, problems))
    return loaded


def _by(loaded, track: str, key: str) -> Loaded:
    return next(x for x in loaded if x.entry.track == track and x.entry.method.key == key)


def _with_bootstrap(item: Loaded, B: int) -> Loaded:
    entry = item.entry.model_copy(update={"bootstrap": BootstrapInfo(B=B, seed=item.entry.bootstrap.seed)})
    return Loaded(item.path, entry, item.reference, item.method)


def test_one_comparison_per_draw_set_on_both_tracks(board):
    loaded = _loaded(board)
    [c] = compare_tracks(loaded, group_stats(loaded))
    assert (c.backbone, c.n_tasks, len(c.draw_set.draws)) == ("micro", 2, 2)
    assert sorted(r.key for r in c.rows) == sorted(METHODS) and c.only_on == {"default": [], "tuned": []}
    assert c.bootstrap == {"B": stats.DEFAULT_B, "seed": stats.DEFAULT_SEED}
    for r in c.rows:  # each side is that track's own row, which its entry states
        assert r.default_stats["normalized"] == pytest.approx(r.default.result.normalized, abs=2e-4)
        assert r.tuned_stats["normalized_ci95"] == pytest.approx(list(r.tuned.result.ci95), abs=2e-4)
        assert (r.default.data, r.tuned.data) == ("none", "validation")
        assert r.rank_change == r.default_stats["rank"] - r.tuned_stats["rank"]
    assert c.calibration_free_tie_group is None                # no method uses calibration data


def test_without_resampling_delta_is_tuned_minus_default(board):
    loaded = [_with_bootstrap(x, 0) for x in _loaded(board)]
    [c] = compare_tracks(loaded, group_stats(loaded))
    for r in c.rows:  # the means over draws of the entries' own per-draw normalized scores
        want = np.mean([d.normalized for d in r.tuned.per_draw]) - np.mean([d.normalized for d in r.default.per_draw])
        assert r.delta == pytest.approx(want, abs=1e-4)
        assert r.delta_ci95 == [r.delta, r.delta] and r.p_delta_gt0 == float(r.delta > 0)


def test_delta_ci_is_the_percentile_interval_under_one_shared_plan(board):
    loaded = _loaded(board)
    [c] = compare_tracks(loaded, group_stats(loaded))
    default = [x for x in loaded if x.entry.track == "default"]
    tuned = [_by(loaded, "tuned", x.entry.method.key) for x in default]
    keys = [f"{x.entry.method.key}@{x.entry.track}" for x in default + tuned]
    plan = stats.make_plan(draws_of(default), stats.DEFAULT_B, stats.DEFAULT_SEED)
    names, reps = stats.replicate_scores(draws_of(default + tuned, keys=keys), plan)
    reps = reps[~np.isnan(reps[:, 0])]
    for x in default + tuned:  # the plan is each track's own: its columns give the entries' stored CIs
        col = reps[:, names.index(f"{x.entry.method.key}@{x.entry.track}")]
        assert np.percentile(col, [2.5, 97.5]) == pytest.approx(list(x.entry.result.ci95), abs=2e-4)
    for r in c.rows:
        diff = reps[:, names.index(f"{r.key}@tuned")] - reps[:, names.index(f"{r.key}@default")]
        assert r.delta_ci95 == pytest.approx(np.percentile(diff, [2.5, 97.5]), abs=1e-4)
        assert r.p_delta_gt0 == pytest.approx(np.mean(diff > 0), abs=1e-4)


def test_a_method_identical_on_both_tracks_has_delta_zero(board):
    loaded = _loaded(board)
    assert _by(loaded, "default", "simple_avg").method == _by(loaded, "tuned", "simple_avg").method   # no grid
    [c] = compare_tracks(loaded, group_stats(loaded))
    row = next(r for r in c.rows if r.key == "simple_avg")
    assert (row.delta, row.delta_ci95, row.p_delta_gt0, row.tuned.tuning[0].evaluations) == (0.0, [0.0, 0.0], 0.0, 1)


def test_folders_of_another_stack_are_not_paired(board, capsys):
    loaded = _loaded(board)
    pin = _by(loaded, "tuned", "ties").entry.items
    other = pin.model_copy(update={"reference": pin.reference.model_copy(update={"sha256": "0" * 64})})
    changed = [Loaded(x.path, x.entry.model_copy(update={"items": other}), x.reference, x.method)
               if x.entry.track == "tuned" else x for x in loaded]
    with pytest.raises(ValueError, match=r"default/n2-d2-\w+ and .*tuned/n2-d2-\w+ differ in reference"):
        compare_tracks(changed, group_stats(loaded))

    for path in sorted((board / "v2" / "micro" / "tuned").glob("n2-*/*.json")):
        fields = json.loads(path.read_text())
        fields.pop("entry_sha256")
        fields["provenance"]["backbone"]["base_sha256"] = "f" * 64    # the same draws merged on another base
        path.write_text(seal(fields).to_json())
    assert validate_leaderboard(board)[1] == []                       # each folder alone is valid
    with pytest.raises(ValueError, match=r"default/n2-d2-\w+ and .*tuned/n2-d2-\w+ differ in base"):
        build_leaderboard(board)
    assert main(["leaderboard", "show", "--root", str(board)]) == 2
    assert "differ in base" in capsys.readouterr().err
    assert main(["leaderboard", "show", "--root", str(board), "--track", "tuned"]) == 0   # one track: no pairing


def test_a_method_on_one_track_only_is_listed_not_compared(board):
    folder = next((board / "v2" / "micro" / "tuned").glob("n2-*"))
    (folder / "ties.json").unlink()
    (folder / "items" / "methods" / "ties.json").unlink()
    loaded = _loaded(board)
    [c] = compare_tracks(loaded, group_stats(loaded))
    assert [r.key for r in c.rows if r.key == "ties"] == [] and c.only_on == {"default": ["ties"], "tuned": []}


def test_show_json_rows_carry_the_paired_difference(board, capsys):
    assert main(["leaderboard", "show", "--root", str(board), "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "method"]
    assert len(rows) == 2 * len(METHODS)
    loaded = _loaded(board)
    [c] = compare_tracks(loaded, group_stats(loaded))
    for row in rows:
        if row["track"] == "default":
            assert row["vs_default"] is None
            continue
        cmp = next(r for r in c.rows if r.key == row["method"])
        default = next(r for r in rows if r["track"] == "default" and r["method"] == row["method"])
        v = row["vs_default"]
        assert set(v) == {"delta", "delta_ci95", "p_delta_gt0", "default_normalized", "default_ci95",
                          "default_rank", "rank_change"}
        assert [v["delta"], v["delta_ci95"], v["p_delta_gt0"]] == [cmp.delta, cmp.delta_ci95, cmp.p_delta_gt0]
        assert [v["default_normalized"], v["default_ci95"], v["default_rank"]] == \
               [default["normalized"], default["ci95"], default["rank"]]
        assert v["rank_change"] == default["rank"] - row["rank"]
    assert main(["leaderboard", "show", "--root", str(board)]) == 0
    assert "Tuned vs default" in capsys.readouterr().out


def test_readme_and_page_show_the_comparison(board, tmp_path):
    build_leaderboard(board)
    loaded = _loaded(board)
    [c] = compare_tracks(loaded, group_stats(loaded))
    readme = (board / "README.md").read_text()
    assert "### micro · tuned vs default" in readme and f"#### {c.title}" in readme
    table = readme.split(f"#### {c.title}")[1]
    for r in c.rows:
        line = next(x for x in table.splitlines() if x.startswith(f"| `{r.key}`"))
        cells = [x.strip() for x in line.strip("|").split("|")]
        assert cells[1] == f"{r.delta:+.2f} [{r.delta_ci95[0]:+.2f}, {r.delta_ci95[1]:+.2f}]"
    assert "#### micro · default · N = 2" in readme   # the per-track tables stay
    page = (board / "index.html").read_text()
    assert page.count('<section class="tracks"') == 1 and 'class="group"' in page

    from browser import chromium_dom, tables
    dom = tables(chromium_dom(board / "index.html", tmp_path))
    compared = next(t for t in dom.tables if "Δ tuned − default [95 % CI]" in t["headers"])
    assert dom.ready and [r["method"] for r in compared["rows"]] == [r.key for r in c.rows]


# ---- the committed leaderboard ----

def test_committed_leaderboard_compares_every_method_at_n6():
    loaded = _loaded(default_root())
    [c] = compare_tracks(loaded, group_stats(loaded, backbone="tiny"))
    assert c.n_tasks == 6 and len(c.rows) == 14 and c.leader == {"default": "regmean", "tuned": "regmean"}
    rows = {r.key: r for r in c.rows}
    for same in ("simple_avg", "metagpt"):                   # no grid: one evaluation, the default
        assert (rows[same].delta, rows[same].delta_ci95) == (0.0, [0.0, 0.0])
    assert rows["task_arithmetic"].delta_ci95[0] > 0 and rows["task_arithmetic"].tuned.tuning[0].chosen["lam"] != 0.4
    assert all(t.evaluations <= t.budget == 8 for r in c.rows for t in r.tuned.tuning)


def test_the_top_level_readme_quotes_the_computed_differences():
    """The README's "Does tuning change the order?" table states what the code computes."""
    text = (default_root().parent / "README.md").read_text()
    section = text.split("**Does tuning change the order?**")[1].split("\n#")[0].replace("−", "-")   # typeset minus
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| `")]
    quoted = {row[0].strip("`"): row[1:6] for row in cells}
    loaded = _loaded(default_root())
    [c] = compare_tracks(loaded, group_stats(loaded, backbone="tiny"))
    assert set(quoted) == {r.key for r in c.rows}
    for r in c.rows:
        d, t = r.default_stats, r.tuned_stats
        assert quoted[r.key] == [f"{r.delta:+.2f}", f"[{r.delta_ci95[0]:+.2f}, {r.delta_ci95[1]:+.2f}]",
                                 f"{r.p_delta_gt0:.2f}", f"{d['normalized']:.2f} → {t['normalized']:.2f}",
                                 f"{d['rank']} → {t['rank']}"], r.key
