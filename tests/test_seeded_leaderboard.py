"""The committed leaderboard: its entries validate, its derived files are current, and its embedded-backbone
entries meet the suite's acceptance bar (each adapter far above the base, merging clearly below them); the
protocol-v2 seeding covers every method at N = 6 and several draws at N = 2 and 4 (issue 12)."""
from __future__ import annotations

import shutil
from collections import defaultdict

import pytest

from merge_bench.leaderboard import build_leaderboard, default_root, load_entries, validate_leaderboard
from merge_bench.leaderboard.sweeps import group_stats, validate_v2
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
    for name in ("README.md", "index.html", "entry.schema.json", "entry.v2.schema.json"):
        assert (copy / name).read_text() == (ROOT / name).read_text(), f"{name} is stale: run merge-bench leaderboard build"


def test_every_method_on_the_full_suite_and_several_sizes(tiny_entries):
    by_size = defaultdict(set)
    for e in tiny_entries:
        by_size[len(e.task_set.tasks)].add(e.method.name)
    assert len(by_size) >= 3, f"task-set sizes {sorted(by_size)}: the score-vs-tasks plot needs several"
    builtin = {cls.name for cls in BUILTIN if cls.data == "none"}  # v1 is frozen: it had no data-requiring method
    assert builtin <= by_size[max(by_size)], f"missing on the full suite: {builtin - by_size[max(by_size)]}"


def test_suite_ranks_methods(tiny_entries):
    full = [e for e in tiny_entries if len(e.task_set.tasks) == max(len(x.task_set.tasks) for x in tiny_entries)]
    ref = full[0]
    for task in ref.task_set.tasks:  # each adapter clearly beats the base on its own task
        assert ref.lora.scores[task] - ref.pretrained.scores[task] >= 30, task
    by_name = {e.method.name: e.normalized for e in full}
    assert by_name["simple_avg"] <= 90, "simple averaging should clearly lose to the adapters"
    assert max(by_name.values()) - min(by_name.values()) >= 5, "methods should not all score alike"


@pytest.fixture(scope="module")
def tiny_v2():
    loaded, problems = validate_v2(ROOT)
    assert problems == [], "\n".join(map(str, problems))
    groups = [g for g in group_stats(loaded, backbone="tiny") if g.track == "default"]
    assert groups, f"no tiny v2 entries under {ROOT}/v2: seed them with scripts/seed_leaderboard.py"
    return {g.n_tasks: g for g in groups}


def test_v2_seeding_covers_the_protocol(tiny_v2):
    builtin = {cls.name for cls in BUILTIN}
    assert 6 in tiny_v2 and len(tiny_v2[6].draw_set.draws) == 1
    for n in (2, 4):
        draws = {tuple(d.tasks) for d in tiny_v2[n].draw_set.draws} if n in tiny_v2 else set()
        assert len(draws) >= 3, f"N = {n} needs at least 3 distinct draws, has {sorted(draws)}"
    for n, g in tiny_v2.items():
        names = {e.method.name for e in g.entries}
        assert builtin <= names, f"N = {n}: missing {sorted(builtin - names)}"


def test_v2_intervals_are_real(tiny_v2):
    for n, g in tiny_v2.items():
        widths = []
        for key, s in g.stats["methods"].items():
            lo, hi = s["normalized_ci95"]
            assert lo <= s["normalized"] <= hi, (n, key)
            widths.append(hi - lo)
        # a merge equal to its adapters on every item has a point interval; not every method is one
        assert max(widths) > 1, f"N = {n}: intervals {widths}"
        assert g.stats["tie_group"], f"N = {n}: no leader"
