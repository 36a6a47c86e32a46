"""``merge-bench methods``: list the registered merge methods with their parameters and search grids.

Imports no torch: the method modules defer their maths imports (see ``merging.methods``).
"""
from __future__ import annotations

HEADERS = ["method", "space", "parameters (defaults)", "grid (search order)", "description"]
WIDTH = 100  # the table and the note fit a 100-column terminal


def widths(rows: list[list[str]]) -> list[int]:
    """Column widths: whole method names and the space column, the rest of WIDTH shared by parameters, grid and
    description (0.36, 0.30, 0.34), less the 2-space gaps and the 2 characters tabulate pads each column with."""
    name = max(len(r[0]) for r in rows)
    rest = WIDTH - name - 6 - 2 * 4 - 2 * 5
    params, grid = int(rest * 0.36), int(rest * 0.30)
    return [name, 6, params, grid, rest - params - grid]


def table(rows: list[list[str]]) -> str:
    """The methods table, at most WIDTH columns wide (the description column gives way if tabulate's padding
    still overflows)."""
    from tabulate import tabulate

    cols = widths(rows)
    while True:
        text = tabulate(rows, headers=HEADERS, maxcolwidths=cols)
        if max(map(len, text.splitlines())) <= WIDTH or cols[-1] <= 12:
            return text
        cols[-1] -= 1


def method_rows() -> list[list[str]]:
    from ..merging.methods import available_methods

    rows = []
    for name, cls in sorted(available_methods().items()):
        params = ", ".join(f"{p.name}={p.default!r}" + (f" {list(p.choices)}" if p.choices else "") for p in cls.params)
        grid = "; then ".join(f"{p}: {', '.join(map(str, values))}" for p, values in cls.search_grid()) or "-"
        rows.append([name, "factor" if cls.lowrank else "dense", params or "-", grid, cls.description])
    return rows


def run(args) -> int:
    import textwrap

    from ..merging.methods.svc import ALPHA as SVC_ALPHA
    from ..merging.methods.svc import SUFFIX as SVC_SUFFIX

    rows = method_rows()
    print(table(rows))
    print()
    print(textwrap.fill(f"Any method name followed by {SVC_SUFFIX} (e.g. ties{SVC_SUFFIX}) runs Singular Value "
                        f"Calibration on each merged matrix afterwards: the method's parameters and grid, plus "
                        f"{SVC_ALPHA.name}={SVC_ALPHA.default!r}.", WIDTH))
    return 0


def register(sub) -> None:
    p = sub.add_parser("methods", help="list merge methods, their parameters and defaults")
    p.set_defaults(func=run)
