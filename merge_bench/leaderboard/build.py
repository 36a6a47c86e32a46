"""``merge-bench leaderboard build``: README.md, index.html, plots and the JSON Schema from the entries."""
from __future__ import annotations

import json
from pathlib import Path

from .page import render_page
from .plots import write_plots
from .readme import plot_names, render_readme
from .schema import json_schema
from ..io.files import atomic_write_text
from .store import SCHEMA_FILE
from .tables import group_entries
from .validate import validate_leaderboard

PLOTS_DIR = "plots"


def write_schema(root: Path) -> Path:
    """Export the entry JSON Schema (for tools outside Python) to ``root/entry.schema.json``."""
    path = Path(root) / SCHEMA_FILE
    atomic_write_text(path, json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path


def build_leaderboard(root: Path) -> list[Path]:
    """Validate every entry, then regenerate the derived files; returns the paths written.

    Refuses to build from invalid entries: the generated pages are what people read, so a
    tampered or inconsistent entry must be fixed first. Plots left from entries that no longer
    exist are removed so the plots/ folder always matches the entries.
    """
    root = Path(root)
    entries, problems = validate_leaderboard(root)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise ValueError(f"{len(problems)} problem(s) in {root}; fix them before building:\n  {listing}")
    groups = group_entries(entries)
    written = []
    readme = root / "README.md"
    atomic_write_text(readme, render_readme(groups))
    page = root / "index.html"
    atomic_write_text(page, render_page(groups))
    written += [readme, page, write_schema(root)]
    plots = root / PLOTS_DIR
    plot_paths = write_plots(groups, plots, plot_names)
    if plots.is_dir():
        for stale in sorted(set(plots.glob("*.png")) - set(plot_paths)):
            stale.unlink()
    return written + plot_paths
