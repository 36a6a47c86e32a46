"""``merge-bench leaderboard build``: README.md, index.html, plots and the JSON Schema from the entries, for
every backbone and track that has entries."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.files import atomic_write_bytes, atomic_write_text
from .groups import Group, group_stats
from .page import render_page
from .plots import heatmap_png, track_png
from .readme import heatmap_name, plot_name, render_readme
from .schema import json_schema
from .store import SCHEMA_FILE
from .tracks import compare_tracks
from .validate import validate_leaderboard

PLOTS_DIR = "plots"


def write_schema(root: Path) -> Path:
    """Export the entry JSON Schema (for tools outside Python)."""
    path = Path(root) / SCHEMA_FILE
    atomic_write_text(path, json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path


def build_leaderboard(root: Path) -> list[Path]:
    """Validate every entry, then regenerate the derived files; returns the paths written.

    Refuses to build from invalid entries: the generated pages are what people read, so a
    tampered or inconsistent entry must be fixed first. Files left from entries that no longer exist (plots,
    an older schema export) are removed so the folder always matches the entries.
    """
    root = Path(root)
    loaded, problems = validate_leaderboard(root)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise ValueError(f"{len(problems)} problem(s) in {root}; fix them before building:\n  {listing}")
    groups = group_stats(loaded)
    comparisons = compare_tracks(loaded, groups)
    readme, page = root / "README.md", root / "index.html"
    atomic_write_text(readme, render_readme(groups, comparisons))
    atomic_write_text(page, render_page(groups, comparisons))
    written = [readme, page, write_schema(root)]
    plots = root / PLOTS_DIR
    by_track: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_track.setdefault((g.backbone, g.track), []).append(g)
        path = plots / heatmap_name(g)
        atomic_write_bytes(path, heatmap_png(g))
        written.append(path)
    for members in by_track.values():
        path = plots / plot_name(members[0])
        atomic_write_bytes(path, track_png(members))
        written.append(path)
    if plots.is_dir():
        for stale in sorted(set(plots.glob("*.png")) - set(written)):
            stale.unlink()
    old_schema = root / "entry.v2.schema.json"
    if old_schema.exists():
        old_schema.unlink()
    return written
