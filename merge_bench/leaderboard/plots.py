"""PNG plots with matplotlib's Agg canvas (no pyplot, so no global figure state, no display)."""
from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Callable

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io.files import atomic_write_bytes
from .tables import PRETRAINED_LABEL, Group


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" metadata: a rebuild with another matplotlib version gives the same bytes if the
    # drawing is the same, so rebuilt plots do not churn in git.
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def normalized_vs_tasks_png(backbone: str, groups: list[Group]) -> bytes:
    """Avg. Normalized per method against the number of merged tasks, over a backbone's task sets.

    Each task set is a dot; a line joins a method's mean over the task sets of each size. The
    pretrained row is drawn dashed as the lower reference (LoRA is 100 by definition).
    """
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for group in groups:
        for row in group.rows:
            if row.kind != "lora":
                points[row.label].append((len(group.tasks), row.normalized))
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    # tab10's colours are far apart; tab20 (pairs of close shades) only when there are more methods.
    colors = colormaps["tab10" if len(points) <= 11 else "tab20"].colors
    for i, (label, pts) in enumerate(sorted(points.items(), key=lambda kv: (kv[0] == PRETRAINED_LABEL, kv[0]))):
        color = "black" if label == PRETRAINED_LABEL else colors[i % len(colors)]
        by_k: dict[int, list[float]] = defaultdict(list)
        for k, value in pts:
            by_k[k].append(value)
        ks = sorted(by_k)
        means = [sum(by_k[k]) / len(by_k[k]) for k in ks]
        style = "--" if label == PRETRAINED_LABEL else "-"
        ax.plot(ks, means, style, marker="o", color=color, label=label)
        ax.scatter([k for k, _ in pts], [v for _, v in pts], color=color, s=12, alpha=0.5)
    ax.axhline(100.0, color="grey", linewidth=0.8, linestyle=":", label="LoRA (individual) = 100")
    ax.set_xlabel("number of merged tasks")
    ax.set_ylabel("Avg. Normalized (%)")
    ax.set_title(f"{backbone}: normalized score vs number of merged tasks")
    all_k = sorted({len(g.tasks) for g in groups})
    ax.set_xticks(all_k)
    if len(all_k) == 1:
        ax.set_xlim(all_k[0] - 1, all_k[0] + 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return _png(fig)


def heatmap_png(group: Group) -> bytes:
    """Rows × tasks, coloured by 100 · score / LoRA score, annotated with the raw score."""
    lora = next(r for r in group.rows if r.kind == "lora").scores
    labels = [r.label for r in group.rows]
    ratio = [[100.0 * r.scores[t] / lora[t] if lora[t] else 0.0 for t in group.tasks] for r in group.rows]
    fig = Figure(figsize=(1.2 + 0.9 * len(group.tasks) + 0.06 * max(map(len, labels)), 0.9 + 0.38 * len(labels)))
    ax = fig.add_subplot()
    vmax = max(100.0, max(max(row) for row in ratio))
    image = ax.imshow(ratio, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    for i, row in enumerate(group.rows):
        for j, task in enumerate(group.tasks):
            shade = ratio[i][j] / vmax
            ax.text(j, i, f"{row.scores[task]:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if shade > 0.6 else "white")
    ax.set_xticks(range(len(group.tasks)), group.tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(f"{group.title}: per-task score (colour: % of LoRA)", fontsize=10)
    fig.colorbar(image, ax=ax, label="% of LoRA score")
    return _png(fig)


def write_plots(groups: list[Group], plots_dir: Path, names: Callable[[Group], tuple[str, str]]) -> list[Path]:
    """Write every plot; ``names(group)`` gives (per-backbone, per-group) file names. Returns the paths."""
    written = []
    by_backbone: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_backbone[group.backbone].append(group)
    for backbone, members in by_backbone.items():
        path = plots_dir / names(members[0])[0]
        atomic_write_bytes(path, normalized_vs_tasks_png(backbone, members))
        written.append(path)
    for group in groups:
        path = plots_dir / names(group)[1]
        atomic_write_bytes(path, heatmap_png(group))
        written.append(path)
    return written
