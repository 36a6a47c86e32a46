"""The committed leaderboard: its entries validate, its derived files are current, and its embedded-backbone
entries meet the suite's acceptance bar (each adapter far above the base, merging clearly below them); the
seeding covers every method at N = 6 and several draws at N = 2 and 4."""
from __future__ import annotations

import shutil

import pytest

from merge_bench.leaderboard import build_leaderboard, default_root, validate_leaderboard
from merge_bench.leaderboard.groups import group_stats
from merge_bench.merging.methods import BUILTIN

ROOT = default_root()


def test_committed_entries_validate():
    loaded, problems = validate_leaderboard(ROOT)
    assert loaded and problems == [], "\n".join(map(str, problems))


def test_derived_files_are_current(tmp_path):
    copy = tmp_path / "leaderboard"
    shutil.copytree(ROOT, copy)
    build_leaderboard(copy)
    for name in ("README.md", "index.html", "entry.schema.json"):
        assert (copy / name).read_text() == (ROOT / name).read_text(), f"{name} is stale: run merge-bench leaderboard build"
    assert sorted(p.name for p in (copy / "plots").iterdir()) == sorted(p.name for p in (ROOT / "plots").iterdir())


@pytest.fixture(scope="module")
def tiny_v2():
    loaded, problems = validate_leaderboard(ROOT)
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


def test_suite_ranks_methods(tiny_v2):
    g = tiny_v2[6]
    reference = g.stats["tasks"]
    for task, t in reference.items():  # each adapter clearly beats the base on its own task
        assert t["scores"]["lora"] - t["scores"]["pretrained"] >= 30, task
    m = g.stats["methods"]
    assert m["simple_avg"]["normalized"] <= 90, "simple averaging should clearly lose to the adapters"
    spread = [s["normalized"] for s in m.values()]
    assert max(spread) - min(spread) >= 5, "methods should not all score alike"
