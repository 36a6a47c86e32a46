"""The tuned track's search grids on the methods (issue 13): the spec's grids, defaults first, in search order;
`merge-bench methods` shows them; a plugin declares its own or has none, and a bad one is refused by name."""
from __future__ import annotations

import re
import textwrap

import pytest

from merge_bench.cli import main
from merge_bench.merging.methods import BUILTIN, check_grid, get_method

TA = (0.4, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 1.0)
ALPHA = (1.0, 0.5, 0.8, 1.2, 1.5, 2.0, 2.5, 3.0)
# protocol.md, "Protocol v2: tracks", as the search visits them at each method's defaults
SPEC = {
    "task_arithmetic": [("lam", TA)],
    "ties": [("lam", (1.0, 0.6, 0.8, 1.2, 1.5, 2.0)), ("k", (20.0, 10.0, 30.0))],
    "dare": [("p", (0.5, 0.3, 0.7, 0.9))],             # λ only scales combine=task_arithmetic
    "breadcrumbs": [("lam", TA), ("beta", (0.1, 0.05, 0.15, 0.2))],
    "tall_masks": [("alpha", TA), ("lam", (0.4, 0.2, 0.3, 0.5, 0.6))],
    "star": [("eta", (40.0, 20.0, 60.0, 80.0))],
    "tsv": [("alpha", ALPHA)], "iso_c": [("alpha", ALPHA)], "iso_cts": [("alpha", ALPHA)],
    "knots": [("alpha", (1.0, 0.4, 0.6, 0.8)), ("k", (20.0, 30.0, 40.0))],
    "drm": [("drop_rate", (0.8, 0.6, 0.7, 0.9)), ("coeff", (1.0, 0.8, 1.2))],
    "regmean": [("a", (0.9, 0.5, 0.1, 0.3, 0.7, 1.0))],
    "simple_avg": [], "metagpt": [],
    "cart": [("alpha", (1.0, 2.0, 3.0, 4.0, 0.5)), ("rank_ratio", (0.04, 0.08, 0.16))],
    "wudi": [("alpha", ALPHA)],
    "robustmerge": [("fuse_weight", (2.0, 1.0, 1.5, 3.0)), ("keep", (0.2, 0.1, 0.3, 0.5))],
    "pcb": [("lam", (1.2, 0.8, 1.0, 1.5, 2.0)), ("ratio", (0.1, 0.05, 0.2))],
    "ctm": [("alpha", (0.9, 0.5, 1.2, 1.6, 2.0)), ("beta", (0.25, 0.0, 0.5, 0.75))],
}
# Core Space variants search their inner method's grid.
SPEC.update({f"core_{name}": SPEC[name] for name in ("task_arithmetic", "ties", "dare", "tsv", "iso_c", "cart")})


def test_every_builtin_has_the_spec_grid_starting_at_its_default():
    assert {cls.name for cls in BUILTIN} == set(SPEC)
    for cls in BUILTIN:
        check_grid(cls, "built-in")
        assert cls.search_grid() == SPEC[cls.name], cls.name
        defaults = {p.name: p.default for p in cls.params}
        assert all(values[0] == defaults[name] for name, values in cls.search_grid())


def test_dare_searches_lambda_when_it_scales_the_merge():
    dare = get_method("dare")
    assert dare.search_grid({"combine": "task_arithmetic"}) == [("lam", TA), ("p", (0.5, 0.3, 0.7, 0.9))]


def test_methods_lists_the_grids(capsys):
    from merge_bench.commands.methods import method_rows

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "grid (search order)" in out and "\nctm " in out and "\ncore_ties " in out
    assert "ties+svc" in out and "svc_alpha=0.1" in out
    grids = {row[0]: row[3] for row in method_rows()}  # the table wraps them; the rows hold them whole
    assert grids["ties"] == "lam: 1.0, 0.6, 0.8, 1.2, 1.5, 2.0; then k: 20.0, 10.0, 30.0"
    assert grids["star"] == "eta: 40.0, 20.0, 60.0, 80.0"
    assert grids["ctm"] == "alpha: 0.9, 0.5, 1.2, 1.6, 2.0; then beta: 0.25, 0.0, 0.5, 0.75"


PLUGIN = """
from merge_bench.merging.delta import weighted_sum
from merge_bench.merging.methods import MergeMethod, Param


class Scaled(MergeMethod):
    name = "scaled"
    description = "λ times the mean."
    params = (Param("lam", 1.0, "scale", grid={grid}),)

    def merge(self, deltas, key):
        return weighted_sum(deltas, [self.lam / len(deltas)] * len(deltas))
"""


@pytest.mark.parametrize("grid, error", [
    ("(1.0, 0.5, 2.0)", None),
    ("()", None),                                   # no grid: not tuned
    ("(0.5, 1.0)", "grid [0.5, 1.0] must start with the default 1.0"),
    ("(1.0, 'x')", "expected float, got 'x'"),
    ("(1.0, 0.5, 0.5)", "repeats a value"),
])
def test_a_plugin_declares_its_own_grid_or_none(tmp_path, grid, error):
    path = tmp_path / "scaled.py"
    path.write_text(textwrap.dedent(PLUGIN.format(grid=grid)))
    spec = f"{path}:Scaled"
    if error is None:
        assert get_method(spec).search_grid() == ([("lam", eval(grid))] if eval(grid) else [])
    else:
        with pytest.raises(ValueError, match=re.escape(error)) as err:
            get_method(spec)
        assert str(path) in str(err.value) and "'lam'" in str(err.value)
