"""The committed leaderboard: its entries validate, its derived files are current, and its embedded-backbone
entries meet the suite's acceptance bar (each adapter far above the base, merging clearly below them)."""
from __future__ import annotations

import shutil
from collections import defaultdict

import pytest

from merge_bench.leaderboard import build_leaderboard, default_root, load_entries, validate_leaderboard
from merge_bench.merging.methods import BUILTIN

ROOT = default_root()


@pytest.fixture(scope="module")
def tiny_entries():
    entries = [e for e in load_entries(ROOT) if e.backbone == "tiny"]
    assert entries, f"no tiny entries under {ROOT}/v1: seed them with scripts/seed_leaderboard.py"
    return entries


def test_committed_entries_validate():
    entries, problems = validate_leaderboard(ROOT)
    assert entries and problems == [], "\n".join(map(str, problems))


def test_derived_files_are_current(tmp_path):
    copy = tmp_path / "leaderboard"
    shutil.copytree(ROOT, copy)
    build_leaderboard(copy)
    for name in ("README.md", "index.html", "entry.schema.json"):
        assert (copy / name).read_text() == (ROOT / name).read_text(), f"{name} is stale: run merge-bench leaderboard build"


def test_every_method_on_the_full_suite_and_several_sizes(tiny_entries):
    by_size = defaultdict(set)
    for e in tiny_entries:
        by_size[len(e.task_set.tasks)].add(e.method.name)
    assert len(by_size) >= 3, f"task-set sizes {sorted(by_size)}: the score-vs-tasks plot needs several"
    builtin = {cls.name for cls in BUILTIN}
    assert builtin <= by_size[max(by_size)], f"missing on the full suite: {builtin - by_size[max(by_size)]}"


def test_suite_ranks_methods(tiny_entries):
    full = [e for e in tiny_entries if len(e.task_set.tasks) == max(len(x.task_set.tasks) for x in tiny_entries)]
    ref = full[0]
    for task in ref.task_set.tasks:  # each adapter clearly beats the base on its own task
        assert ref.lora.scores[task] - ref.pretrained.scores[task] >= 30, task
    by_name = {e.method.name: e.normalized for e in full}
    assert by_name["simple_avg"] <= 90, "simple averaging should clearly lose to the adapters"
    assert max(by_name.values()) - min(by_name.values()) >= 5, "methods should not all score alike"
