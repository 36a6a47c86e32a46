"""What a reader meets, on a real micro sweep (two sizes, two draws): ``show --json`` and ``--csv`` rows with
per-task scores, Wilson intervals and the retained gain recomputed here from the per-item files; the page in
headless Chromium at 1,400 and 390 px; entries that point outside their folder refused."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re

import numpy as np
import pytest

from merge_bench.bench import stats
from merge_bench.bench.run import RunConfig
from merge_bench.bench.sweep import run_sweep
from merge_bench.cli import main
from merge_bench.leaderboard.build import build_leaderboard
from merge_bench.leaderboard.convert import entries_from_sweep
from merge_bench.leaderboard.groups import group_stats
from merge_bench.leaderboard.schema import seal
from merge_bench.leaderboard.store import write_new
from merge_bench.leaderboard.validate import validate_leaderboard

from browser import chromium_dom, measure, screenshot, tables

METHODS = ["simple_avg", "ties", "task_arithmetic"]


@pytest.fixture(scope="module")
def record(micro_backbone, tmp_path_factory):
    base = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERGE_BENCH_CACHE", str(base / "cache"))
        cfg = RunConfig(backbone="micro", sizes=[2, 3], draws=2, methods=METHODS, out=base / "runs")
        return run_sweep(cfg, backbone=micro_backbone, progress=False)


@pytest.fixture(scope="module")
def board(record, tmp_path_factory):
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    for new in entries_from_sweep(record):
        write_new(root, new)
    build_leaderboard(root)
    return root


def _rows(board, capsys, *extra):
    assert main(["leaderboard", "show", "--root", str(board), *extra]) == 0
    return capsys.readouterr().out


def _items(board, n):
    folder = next((board / "v2" / "micro" / "default").glob(f"n{n}-*"))
    ref = json.loads((folder / "items" / "reference.json").read_text())
    methods = {p.stem: json.loads(p.read_text()) for p in (folder / "items" / "methods").glob("*.json")}
    return ref, methods


def _wilson(k, n, z=1.96):
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0, 100 * (center - half)), 4), round(min(100, 100 * (center + half)), 4)]


def test_show_json_rows_carry_per_task_scores_and_the_retained_gain_recomputed_from_the_items(board, capsys):
    rows = json.loads(_rows(board, capsys, "--json"))
    assert {r["kind"] for r in rows} == {"method", "pretrained", "lora"}
    assert len(rows) == 2 * (len(METHODS) + 2)
    for n in (2, 3):
        ref, methods = _items(board, n)
        group = [r for r in rows if r["n_tasks"] == n]
        assert [r["kind"] for r in group][-2:] == ["pretrained", "lora"]
        draws = group[0]["draws"]
        kept = sorted({t for d in draws for t in d if np.mean(ref["lora"][t]) > np.mean(ref["pretrained"][t])})
        excluded = sorted({t for d in draws for t in d} - set(kept))
        for r in group:
            assert r["retained_excluded"] == excluded
            per_draw_gain = []
            for d, tasks in enumerate(draws):
                rows_of = {"pretrained": ref["pretrained"], "lora": ref["lora"]}
                items = rows_of[r["kind"]] if r["kind"] != "method" else methods[r["method"]]["draws"][d]["tasks"]
                cells = [c for c in r["per_task"] if c["draw"] == d]
                assert [c["task"] for c in cells] == tasks
                gains = []
                for c in cells:
                    mine, pre, lora = (np.asarray(x[c["task"]], dtype=float) for x in (items, ref["pretrained"],
                                                                                        ref["lora"]))
                    assert c["score"] == pytest.approx(100 * mine.mean(), abs=1e-4)
                    assert c["wilson95"] == pytest.approx(_wilson(int(mine.sum()), len(mine)), abs=1e-4)
                    if c["task"] in kept:
                        gains.append(100 * (mine.mean() - pre.mean()) / (lora.mean() - pre.mean()))
                per_draw_gain.append(np.mean(gains))
            assert r["retained"] == pytest.approx(np.mean(per_draw_gain), abs=1e-3)
            if r["kind"] == "method":
                assert r["retained_per_draw"] == pytest.approx(per_draw_gain, abs=1e-3)
                lo, hi = r["retained_ci95"]
                assert lo <= r["retained"] <= hi
    # the CI: the same bootstrap plan as the normalized score's, so the same replicates give both
    loaded, _ = validate_leaderboard(board)
    g = next(g for g in group_stats(loaded) if g.n_tasks == 3)
    from merge_bench.leaderboard.validate import draws_of
    members = [x for x in loaded if x.path.parent.name == g.draw_set.id]
    plan = stats.make_plan(draws_of(members), B=g.entries[0].bootstrap.B, seed=g.entries[0].bootstrap.seed)
    again = stats.bootstrap(draws_of(members), plan=plan).to_dict()
    row = next(r for r in rows if r["n_tasks"] == 3 and r["method"] == "ties")
    assert row["retained_ci95"] == again["methods"]["ties"]["retained_ci95"]
    assert row["ci95"] == again["methods"]["ties"]["normalized_ci95"]


def test_show_csv_is_the_json_rows_one_line_per_task(board, capsys):
    rows = json.loads(_rows(board, capsys, "--json"))
    lines = list(csv.DictReader(io.StringIO(_rows(board, capsys, "--csv"))))
    assert len(lines) == sum(len(r["per_task"]) for r in rows)
    ties = [x for x in lines if x["method"] == "ties" and x["n_tasks"] == "2"]
    want = next(r for r in rows if r["method"] == "ties" and r["n_tasks"] == 2)
    assert [(int(x["draw"]), x["task"], float(x["score"])) for x in ties] == \
        [(c["draw"], c["task"], c["score"]) for c in want["per_task"]]
    assert float(ties[0]["normalized"]) == want["normalized"] and float(ties[0]["retained"]) == want["retained"]
    assert float(ties[0]["wilson_low"]) == want["per_task"][0]["wilson95"][0]
    with pytest.raises(SystemExit):
        main(["leaderboard", "show", "--root", str(board), "--csv", "--json"])


def test_show_text_has_the_reference_rows_and_per_task_tables(board, capsys):
    text = _rows(board, capsys)
    assert "Retained gain [95 % CI]" in text and "Per task (score, Wilson 95 % CI)" in text
    assert text.count("LoRA (individual)") == 4 and text.count("Pretrained") == 4    # both tables of both sizes


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "items/../../x.json", "C:\\x.json"])
def test_an_entry_pinning_a_file_outside_its_folder_is_refused(board, tmp_path, path):
    import shutil

    root = tmp_path / "lb"
    shutil.copytree(board, root)
    entry = next((root / "v2" / "micro" / "default").glob("n2-*/ties.json"))
    fields = json.loads(entry.read_text())
    fields.pop("entry_sha256")
    fields["items"]["method"]["path"] = path
    entry.write_text(json.dumps(fields))
    problems = validate_leaderboard(root)[1]
    assert any(p.field == "items.method.path" and "inside the entry's folder" in p.message for p in problems), problems
    with pytest.raises(ValueError, match="inside the entry's folder"):
        seal(fields)


def test_a_symlink_out_of_the_folder_is_refused(board, tmp_path):
    import shutil

    root = tmp_path / "lb"
    shutil.copytree(board, root)
    items = next((root / "v2" / "micro" / "default").glob("n2-*")) / "items" / "methods" / "ties.json"
    outside = tmp_path / "elsewhere.json"
    outside.write_text(items.read_text())
    items.unlink()
    os.symlink(outside, items)
    problems = validate_leaderboard(root)[1]
    assert any(p.field == "items.method.path" and "outside the entry's folder" in p.message for p in problems)


def test_page_fits_1400_px_and_390_px_without_sideways_page_scroll(board, tmp_path):
    page = board / "index.html"
    wide = measure(page, tmp_path, 1400)
    assert wide["page"] <= wide["window"] and wide["boxes"]
    assert all(scroll <= client for scroll, client in wide["boxes"]), wide    # every column of every table in view
    narrow = measure(page, tmp_path, 390)
    assert narrow["page"] <= narrow["window"], narrow                         # tables scroll inside their own box
    for width in (1400, 390):
        assert screenshot(page, tmp_path, width).stat().st_size > 10_000


def test_page_renders_markdown_and_reads_without_javascript(board, tmp_path):
    html = (board / "index.html").read_text()
    text = re.sub(r"<script>.*?</script>|<style>.*?</style>", "", html, flags=re.S)
    assert "**" not in text and "`" not in text                             # no literal Markdown
    assert "<strong>Retained gain</strong>" in text and "<code>merge-bench check</code>" in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # self-contained
    static = tables(html)                                                   # no script run: the tables are there
    loaded, _ = validate_leaderboard(board)
    groups = group_stats(loaded)
    assert len(static.tables) == 2 * len(groups)
    for table, g in zip(static.tables[::2], groups):
        assert [r["method"] for r in table["rows"]][-2:] == ["Pretrained", "LoRA (individual)"]
        best = sorted(g.stats["methods"], key=lambda k: -g.stats["methods"][k]["normalized"])
        assert [r["method"] for r in table["rows"]][:-2] == best


@pytest.mark.parametrize("column, direction", [("Retained gain [95 % CI]", "ascending"), ("Method", "descending")])
def test_page_sorts_every_table_by_a_column(board, tmp_path, column, direction):
    from urllib.parse import quote

    build_leaderboard(board)
    dom = tables(chromium_dom(board / "index.html", tmp_path, f"#sort={quote(column)}&dir={direction}"))
    assert dom.ready
    main_tables = [t for t in dom.tables if column in t["headers"]]
    assert main_tables
    for t in main_tables:
        i = t["headers"].index(column)
        assert t["sort"] == {i: direction}
        cells = [r["cells"][i] for r in t["rows"]]
        if column == "Method":
            keys = [c.lower() for c in cells]
        else:
            keys = [float(c.split()[0]) for c in cells if c and c != "n/a"]
        assert keys == sorted(keys, reverse=direction == "descending")


# ---- compare: paired A − B without rerunning ----

def test_compare_two_entries_gives_the_paired_difference_per_draw_and_task(board, capsys):
    from merge_bench.bench.compare import compare
    from merge_bench.commands.compare import load_side

    folder = next((board / "v2" / "micro" / "default").glob("n2-*"))
    a, b = load_side(folder / "ties.json"), load_side(folder / "simple_avg.json")
    result = compare(a, b, B=400, seed=5)
    ref, methods = _items(board, 2)
    rows = [d for d in result.differences if d.row == "ties vs simple_avg"]
    assert len(rows) == 4                                                   # 2 draws × 2 tasks
    rng = np.random.default_rng(5)                                          # one index matrix per task, sorted
    index = {t: rng.integers(0, len(ref["pretrained"][t]), size=(400, len(ref["pretrained"][t])))
             for t in sorted({d.task for d in result.differences})}
    for d in rows:
        i = int(d.draw.split("-d")[1])
        x = np.asarray(methods["ties"]["draws"][i]["tasks"][d.task], dtype=float)
        y = np.asarray(methods["simple_avg"]["draws"][i]["tasks"][d.task], dtype=float)
        assert d.delta == pytest.approx(100 * (x.mean() - y.mean()))       # hand-computed
        reps = 100 * (x[index[d.task]].mean(axis=1) - y[index[d.task]].mean(axis=1))
        assert d.ci95 == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    refs = [d for d in result.differences if d.row in ("pretrained", "lora")]
    assert refs and all(d.delta == 0 and d.ci95 == (0, 0) for d in refs)   # one folder: the same reference rows
    summary = next(r for r in result.rows if r.row == "ties vs simple_avg")
    assert summary.cells == 4 and summary.mean_delta == pytest.approx(np.mean([d.delta for d in rows]))
    assert main(["compare", str(folder / "ties.json"), str(folder / "simple_avg.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {d["row"] for d in out["differences"]} == {"ties vs simple_avg", "pretrained", "lora"}


def test_compare_a_record_with_its_entry_finds_no_difference(record, board, tmp_path):
    from merge_bench.bench.compare import compare, from_record
    from merge_bench.commands.compare import load_side

    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    folder = next((board / "v2" / "micro" / "default").glob("n3-*"))
    result = compare(load_side(path), load_side(folder / "ties.json"), B=200)
    assert {d.row for d in result.differences} == {"ties", "pretrained", "lora"}
    assert all(d.delta == 0 for d in result.differences)
    other = json.loads(json.dumps(record))
    block = other["sets"]["2"]["draws"][0]["record"]
    task = next(iter(block["tasks"]))
    for d in (x["record"] for b in other["sets"].values() for x in b["draws"]):
        if task in d["tasks"]:
            d["tasks"][task]["sample_ids_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="scored other items"):
        compare(from_record(other, "other"), load_side(path), B=10)
