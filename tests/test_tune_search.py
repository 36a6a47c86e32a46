"""The tuned track's coordinate search on toy objectives (issue 13): order, budget, early stop, ties to the
default; every path below is worked out by hand from the rules in bench/tune.py."""
from __future__ import annotations

import pytest

from merge_bench.bench.tune import coordinate_search

GRID = [("lam", (0.4, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 1.0)), ("k", (20.0, 10.0, 30.0))]
START = {"lam": 0.4, "k": 20.0, "trim": "global"}


def table(scores):
    calls = []

    def objective(config):
        calls.append(dict(config))
        return scores(config)
    return objective, calls


def test_grid_order_and_early_stop_per_coordinate():
    # λ peaks at 0.6: 0.1 and 0.2 are worse than 0.4 (two misses end λ before 0.5 is reached), then k
    objective, calls = table(lambda c: -abs(c["lam"] - 0.6) - abs(c["k"] - 30.0) / 100)
    s = coordinate_search(GRID, START, objective)
    assert [(c["lam"], c["k"]) for c in calls] == [(0.4, 20.0), (0.1, 20.0), (0.2, 20.0), (0.4, 10.0), (0.4, 30.0)]
    assert s.chosen == {"lam": 0.4, "k": 30.0, "trim": "global"} and s.evaluations == 5
    assert [p["params"]["k"] for p in s.to_dict()["path"]] == [20.0, 20.0, 20.0, 10.0, 30.0]


def test_an_improvement_resets_the_patience():
    # 0.1 misses, 0.2 improves, 0.3 misses, 0.5 improves, 0.6 and 0.8 miss: λ ends at 0.5
    values = {0.4: 1.0, 0.1: 0.5, 0.2: 2.0, 0.3: 1.5, 0.5: 3.0, 0.6: 2.5, 0.8: 2.9, 1.0: 9.0}
    objective, calls = table(lambda c: values[c["lam"]] + (c["k"] == 10.0))
    s = coordinate_search(GRID, START, objective)
    assert [c["lam"] for c in calls] == [0.4, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.5]  # 8th: k = 10 at λ = 0.5
    assert calls[-1]["k"] == 10.0
    assert s.evaluations == 8 and s.chosen["lam"] == 0.5 and s.chosen["k"] == 10.0


def test_the_budget_is_never_exceeded():
    order = {name: {v: i for i, v in enumerate(values)} for name, values in GRID}
    objective, calls = table(lambda c: order["lam"][c["lam"]] + order["k"][c["k"]])  # each step improves
    for budget in (1, 3, 8):
        calls.clear()
        s = coordinate_search(GRID, START, objective, budget=budget)
        assert len(calls) == s.evaluations == budget
    with pytest.raises(ValueError, match="at least 1"):
        coordinate_search(GRID, START, objective, budget=0)


def test_ties_go_to_the_default():
    objective, calls = table(lambda c: 1.0)
    s = coordinate_search(GRID, START, objective)
    assert s.chosen == START and s.score == 1.0
    assert [(c["lam"], c["k"]) for c in calls] == [(0.4, 20.0), (0.1, 20.0), (0.2, 20.0), (0.4, 10.0), (0.4, 30.0)]


def test_no_grid_is_one_evaluation_of_the_default():
    objective, calls = table(lambda c: 2.0)
    s = coordinate_search([], {"eta": 40.0}, objective)
    assert calls == [{"eta": 40.0}] and s.chosen == {"eta": 40.0} and s.evaluations == 1
