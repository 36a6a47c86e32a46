"""``merge-bench methods``: list the registered merge methods with their parameters and search grids.

Imports no torch: the method modules defer their maths imports (see ``merging.methods``).
"""
from __future__ import annotations


def method_rows() -> list[list[str]]:
    from ..merging.methods import available_methods

    rows = []
    for name, cls in sorted(available_methods().items()):
        params = ", ".join(f"{p.name}={p.default!r}" + (f" {list(p.choices)}" if p.choices else "") for p in cls.params)
        grid = "; then ".join(f"{p}: {', '.join(map(str, values))}" for p, values in cls.search_grid()) or "-"
        rows.append([name, "factor" if cls.lowrank else "dense", params or "-", grid, cls.description])
    return rows


def run(args) -> int:
    from tabulate import tabulate

    from ..merging.methods.svc import ALPHA as SVC_ALPHA
    from ..merging.methods.svc import SUFFIX as SVC_SUFFIX

    print(tabulate(method_rows(), headers=["method", "space", "parameters (defaults)", "tuned-track grid (in search order)", "description"]))
    print(f"\nAny method name followed by {SVC_SUFFIX} (e.g. ties{SVC_SUFFIX}) runs Singular Value Calibration on each "
          f"merged matrix afterwards: the method's parameters and grid, plus {SVC_ALPHA.name}={SVC_ALPHA.default!r}.")
    return 0


def register(sub) -> None:
    p = sub.add_parser("methods", help="list merge methods, their parameters and defaults")
    p.set_defaults(func=run)
