"""``merge-bench check``: a rerun through an injected runner is compared number by number with a baseline."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import merge_bench.bench.run
from merge_bench.io.files import cache_root
from merge_bench.cli import main
from merge_bench.leaderboard import DEFAULT_TOLERANCE, entries_from_record, run_check, write_entry
from merge_bench.leaderboard.check import key_overrides, load_baseline

from test_leaderboard import METHODS, PRETRAINED, TASKS3, TRUTH, fake_runner, make_record


@pytest.fixture
def board(tmp_path) -> Path:
    root = tmp_path / "leaderboard"
    for entry in entries_from_record(make_record(TASKS3, METHODS)):
        write_entry(root, entry)
    return root


def test_identical_rerun_passes(board):
    calls: list = []
    report = run_check([board], runner=fake_runner(calls=calls))
    assert report.ok and report.differences == []
    # pretrained: normalized + 3 tasks; LoRA: 3 tasks; 3 methods × (normalized + 3 tasks)
    assert report.compared == 4 + 3 + 3 * 4
    assert "check: OK: 19 numbers" in report.render()
    # task_arithmetic and task_arithmetic[lam=0.3] cannot share one RunConfig: two runs, same task set
    assert len(calls) == 2
    assert all(c.tasks == TASKS3 and c.seed == 42 and c.backend == "hf" and c.limit is None for c in calls)
    assert [c.params for c in calls] == [{"simple_avg": {}, "task_arithmetic": {}},
                                         {"task_arithmetic": {"lam": 0.3}}]
    # both runs share one fresh result cache, never the user's: a check evaluates for real
    assert calls[0].cache_dir is not None and calls[0].cache_dir == calls[1].cache_dir
    assert not calls[0].cache_dir.is_relative_to(cache_root())


def test_injected_regression_is_reported_with_its_numbers(board):
    moved = copy.deepcopy(TRUTH)
    moved["task_arithmetic[lam=0.3]"]["topic"] = 60.0  # was 62.0
    report = run_check([board], runner=fake_runner(moved))
    assert not report.ok
    by_field = {(d.row, d.field): d for d in report.differences}
    assert set(by_field) == {("task_arithmetic[lam=0.3]", "topic"), ("task_arithmetic[lam=0.3]", "normalized")}
    d = by_field[("task_arithmetic[lam=0.3]", "topic")]
    assert (d.baseline, d.now, d.delta) == (62.0, 60.0, -2.0)
    assert by_field[("task_arithmetic[lam=0.3]", "normalized")].delta == pytest.approx(-100 * 2 / 97 / 3)
    text = report.render()
    assert "FAILED: 2 of 19 numbers" in text
    assert any(line.split()[3:] == ["task_arithmetic[lam=0.3]", "topic", "62.0000", "60.0000", "-2.0000"]
               for line in text.splitlines())


def test_reference_rows_and_missing_methods_count(board):
    report = run_check([board], runner=fake_runner(pretrained={**PRETRAINED, "nli": 30.0}))
    fields = {(d.row, d.field) for d in report.differences}
    assert fields == {("Pretrained", "nli"), ("Pretrained", "normalized")}

    def drops_simple_avg(cfg):
        cfg.methods = [m for m in cfg.methods if m != "simple_avg"]
        cfg.params.pop("simple_avg", None)
        return fake_runner()(cfg)
    report = run_check([board], runner=drops_simple_avg)
    missing = [d for d in report.differences if d.row == "simple_avg"]
    assert len(missing) == 4 and all(d.now is None and d.delta is None for d in missing)
    assert "missing" in report.render()


def test_tolerance_and_method_filter(board):
    moved = copy.deepcopy(TRUTH)
    moved["simple_avg"]["nli"] += 0.3
    assert run_check([board], runner=fake_runner(moved)).ok  # within the default 0.5
    assert not run_check([board], runner=fake_runner(moved), tolerance=0.2).ok
    calls: list = []
    report = run_check([board], runner=fake_runner(moved, calls=calls), methods=["task_arithmetic[lam=0.3]"])
    assert report.ok and len(calls) == 1 and calls[0].methods == ["task_arithmetic"]
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        run_check([board], runner=fake_runner(), tolerance=-1)
    with pytest.raises(ValueError, match="nothing to check"):
        run_check([board], runner=fake_runner(), backbone="llama-3.2-3b")


def test_baseline_from_a_run_record_or_entry_files(board, tmp_path):
    record_file = tmp_path / "run.json"
    record_file.write_text(json.dumps(make_record(TASKS3, {"simple_avg": METHODS["simple_avg"]})))
    assert run_check([record_file], runner=fake_runner()).compared == 4 + 3 + 4
    moved = copy.deepcopy(TRUTH)
    moved["simple_avg"]["sentiment"] = 0.0
    assert not run_check([record_file], runner=fake_runner(moved)).ok
    files = sorted(board.rglob("task_arithmetic*.json"))
    (snap,) = load_baseline(files)
    assert sorted(snap.methods) == ["task_arithmetic", "task_arithmetic[lam=0.3]"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_baseline([tmp_path / "nope"])


def test_tampered_baseline_is_refused(board):
    path = next(board.rglob("simple_avg.json"))
    data = json.loads(path.read_text())
    data["scores"]["nli"] = 99.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="(?s)baseline entries are not valid.*entry_sha256"):
        run_check([board], runner=fake_runner())


def test_version_changes_are_noted(board):
    report = run_check([board], runner=fake_runner(torch_version="2.14.0"))
    assert report.ok and any("torch 2.13.0 in the baseline, 2.14.0 now" in n for n in report.notes)


def test_key_overrides_reproduce_the_key():
    assert key_overrides("star[eta=20.0]", {"eta": 20.0, "known_rank": 0}) == {"eta": 20.0}
    assert key_overrides("ties", {"k": 20.0}) == {}
    with pytest.raises(ValueError, match="lack"):
        key_overrides("star[eta=20]", {})


def test_cli_exit_codes(board, monkeypatch, capsys):
    monkeypatch.setattr(merge_bench.bench.run, "run_benchmark", fake_runner())
    assert main(["check", "--baseline", str(board)]) == 0
    assert "check: OK" in capsys.readouterr().out
    moved = copy.deepcopy(TRUTH)
    moved["task_arithmetic"]["sentiment"] = 71.0
    monkeypatch.setattr(merge_bench.bench.run, "run_benchmark", fake_runner(moved))
    assert main(["check", "--baseline", str(board)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "70.0000" in out and "71.0000" in out and "+1.0000" in out
    assert main(["check", "--baseline", str(board), "--tolerance", "1.5"]) == 0
    assert DEFAULT_TOLERANCE == 0.5  # one flipped item of a 200-item task passes; two (1.0 point) fail, as above
