"""``merge-bench leaderboard build``: README.md, index.html, plots and the JSON Schema from the entries."""
from __future__ import annotations

import json
from pathlib import Path

from .page import render_page
from .plots import write_plots
from .readme import plot_names, render_readme
from .schema import json_schema, json_schema_v2
from .sweep_views import score_vs_n_png
from .sweeps import GroupV2, group_stats, validate_v2
from .tracks import compare_tracks
from ..io.files import atomic_write_bytes, atomic_write_text
from .store import SCHEMA_FILE
from .tables import group_entries
from .validate import validate_leaderboard

PLOTS_DIR = "plots"


SCHEMA_FILE_V2 = "entry.v2.schema.json"


def write_schema(root: Path) -> list[Path]:
    """Export the entry JSON Schemas (for tools outside Python): v1 and v2 entries."""
    out = []
    for name, schema in ((SCHEMA_FILE, json_schema()), (SCHEMA_FILE_V2, json_schema_v2())):
        atomic_write_text(Path(root) / name, json.dumps(schema, indent=2, sort_keys=True) + "\n")
        out.append(Path(root) / name)
    return out


def v2_plot_name(group: GroupV2) -> str:
    return f"{group.backbone}_{group.track}_v2_normalized_vs_n.png"


def validate_all(root: Path):
    """(v1 entries, v2 entries with their items, every problem of both)."""
    entries, problems = validate_leaderboard(root)
    loaded, problems_v2 = validate_v2(root)
    return entries, loaded, problems + problems_v2


def build_leaderboard(root: Path) -> list[Path]:
    """Validate every entry, then regenerate the derived files; returns the paths written.

    Refuses to build from invalid entries: the generated pages are what people read, so a
    tampered or inconsistent entry must be fixed first. Plots left from entries that no longer
    exist are removed so the plots/ folder always matches the entries.
    """
    root = Path(root)
    entries, loaded, problems = validate_all(root)
    if problems:
        listing = "\n  ".join(str(p) for p in problems)
        raise ValueError(f"{len(problems)} problem(s) in {root}; fix them before building:\n  {listing}")
    groups, groups_v2 = group_entries(entries), group_stats(loaded)
    comparisons = compare_tracks(loaded, groups_v2)
    written = []
    readme = root / "README.md"
    atomic_write_text(readme, render_readme(groups, groups_v2, v2_plot_name, comparisons))
    page = root / "index.html"
    atomic_write_text(page, render_page(groups, groups_v2, v2_plot_name, comparisons))
    written += [readme, page, *write_schema(root)]
    plots = root / PLOTS_DIR
    plot_paths = write_plots(groups, plots, plot_names)
    by_track: dict[tuple[str, str], list[GroupV2]] = {}
    for g in groups_v2:
        by_track.setdefault((g.backbone, g.track), []).append(g)
    for members in by_track.values():
        path = plots / v2_plot_name(members[0])
        atomic_write_bytes(path, score_vs_n_png(members))
        plot_paths.append(path)
    if plots.is_dir():
        for stale in sorted(set(plots.glob("*.png")) - set(plot_paths)):
            stale.unlink()
    return written + plot_paths
