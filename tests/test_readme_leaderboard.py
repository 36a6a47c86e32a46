"""The top-level README's claims about the committed leaderboard are the entries' numbers: the tiny acceptance
table equals the N = 6 entries, and the two tables of "What the seeded leaderboard can and cannot say" equal
the group statistics (a verdict says "loses" only where the Holm-adjusted p is significant)."""
from __future__ import annotations

import pytest

from merge_bench.leaderboard import default_root, validate_leaderboard
from merge_bench.leaderboard.groups import group_stats

README = (default_root().parent / "README.md").read_text(encoding="utf-8")


def _table(after: str, nth: int = 0) -> list[list[str]]:
    """The body rows of the nth Markdown table after the line starting with ``after``."""
    text = README.split(after, 1)[1]
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current[2:])
            current = []
            if len(tables) > nth:
                break
    return tables[nth]


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


@pytest.fixture(scope="module")
def groups():
    loaded, problems = validate_leaderboard(default_root())
    assert problems == []
    return {g.n_tasks: g for g in group_stats(loaded, backbone="tiny") if g.track == "default"}


def _ci(text: str) -> tuple[float, float, float]:
    value, rest = text.split(" [")
    lo, hi = rest.rstrip("]").split(", ")
    return _num(value), _num(lo), _num(hi)


def test_the_acceptance_table_is_the_n6_entries(groups):
    g = groups[6]
    rows = _table("**Acceptance**")
    tasks = g.draw_set.draws[0].tasks
    header = README.split("**Acceptance**", 1)[1].split("| model |", 1)[1].splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][:-1] == sorted(tasks)
    for row in rows:
        name = {"pretrained": "pretrained", "LoRA": "lora"}.get(row[0], row[0])
        scores = [g.stats["tasks"][t]["scores"][name] for t in sorted(tasks)]
        assert [_num(c) for c in row[1:-1]] == pytest.approx(scores, abs=0.05), row[0]
        normalized = 100.0 if name == "lora" else (g.stats["pretrained"] if name == "pretrained"
                                                     else g.stats["methods"][name])["normalized"]
        assert _num(row[-1]) == pytest.approx(normalized, abs=0.005), row[0]
    assert "scores 26.96" in README and "simple averaging's 67.13" in README
    assert round(g.stats["pretrained"]["normalized"], 2) == 26.96
    assert round(g.stats["methods"]["simple_avg"]["normalized"], 2) == 67.13


def test_the_star_table_states_the_paired_difference_and_holm_verdict(groups):
    rows = _table("**What the seeded leaderboard can and cannot say**", 0)
    assert [int(r[0]) for r in rows] == sorted(groups)
    for n, delta, p, verdict, tie, free in rows:
        g = groups[int(n)]
        m = g.stats["methods"]["star"]
        pair = next(x for x in g.stats["pairs"] if {x["a"], x["b"]} == {"star", "simple_avg"})
        assert _ci(delta) == pytest.approx((m["delta"], *m["delta_ci95"]), abs=0.005)
        assert float(p) == pytest.approx(pair["p_holm"], abs=5e-5)
        assert ("loses" in verdict) == (pair["significant"] and m["delta"] < 0)
        assert ("beats" in verdict) == (pair["significant"] and m["delta"] > 0)
        assert tie == ", ".join(g.stats["tie_group"])
        data_free = [e.method.key for e in g.entries if e.data == "none"]
        want = g.data_free_tie_group
        assert free == (f"all {len(data_free)}" if sorted(want) == sorted(data_free) else ", ".join(want))


def test_the_two_scores_table_is_the_entries(groups):
    rows = _table("**What the seeded leaderboard can and cannot say**", 1)
    for n, regmean, lead, over_sa, sa, retained, pretrained in rows:
        g = groups[int(n)]
        m = g.stats["methods"]
        order = sorted(m, key=lambda k: -m[k]["normalized"])
        assert order[0] == "regmean" and _num(regmean) == pytest.approx(m["regmean"]["normalized"], abs=0.005)
        value, runner = lead.split(" (")
        assert runner.rstrip(")") == order[1]
        assert _num(value) == pytest.approx(m["regmean"]["normalized"] - m[order[1]]["normalized"], abs=0.006)
        assert _num(over_sa) == pytest.approx(m["regmean"]["delta"], abs=0.005)
        assert _num(sa) == pytest.approx(m["simple_avg"]["normalized"], abs=0.005)
        s = m["simple_avg"]
        assert _ci(retained) == pytest.approx((s["retained"], *s["retained_ci95"]), abs=0.005)
        assert _num(pretrained) == pytest.approx(g.stats["pretrained"]["normalized"], abs=0.005)
