"""PNG plots with matplotlib's Agg canvas (no pyplot, so no global figure state, no display).

Decisions: a method has one colour on every plot (``method_color``: the built-in methods in a fixed order on
tab20, any other method by a hash of its name), the pretrained row is black and dashed. A track with several
sizes N is drawn as small multiples (one panel per method, its mean and 95 % band against N, the other methods
as thin grey lines for context), so no band hides another; a track with one N as a dot-and-whisker chart.
"""
from __future__ import annotations

import hashlib
import io
import math

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..merging.methods import BUILTIN
from .groups import Group
from .views import LORA, PRETRAINED, task_columns, task_rows

_ORDER = sorted(cls.name for cls in BUILTIN)


def method_color(key: str) -> tuple[float, float, float]:
    """The colour of a method (by its name, so every parameter variant of it shares it) on every plot."""
    name = key.split("[")[0]
    tab20 = colormaps["tab20"].colors
    colors = tab20[::2] + tab20[1::2]  # the ten strong hues first, their light shades after
    if name in _ORDER:
        return colors[_ORDER.index(name) % len(colors)]
    return colors[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(colors)]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" metadata: a rebuild with another matplotlib version gives the same bytes if the
    # drawing is the same, so rebuilt plots do not churn in git.
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _series(groups: list[Group]) -> dict[str, list[tuple[int, dict]]]:
    series: dict[str, list[tuple[int, dict]]] = {}
    for g in sorted(groups, key=lambda g: g.n_tasks):
        for key, s in g.stats["methods"].items():
            series.setdefault(key, []).append((g.n_tasks, s))
        series.setdefault(PRETRAINED, []).append((g.n_tasks, g.stats["pretrained"]))
    return series


def small_multiples_png(groups: list[Group]) -> bytes:
    """One panel per method: its mean over draws against N with the 95 % band and the draws as dots; the
    pretrained row dashed; the other methods in thin grey."""
    series = _series(groups)
    pre = series.pop(PRETRAINED)
    last = max(g.n_tasks for g in groups)
    order = sorted(series, key=lambda k: (-dict(series[k]).get(last, {"normalized": -math.inf})["normalized"], k))
    cols = 4
    rows_ = math.ceil(len(order) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.5 * rows_ + 0.6))
    ns = sorted({g.n_tasks for g in groups})
    axes = [fig.add_subplot(rows_, cols, i + 1) for i in range(len(order))]
    low = min([s["normalized_ci95"][0] for pts in series.values() for _, s in pts] + [s["normalized"] for _, s in pre])
    high = max([s["normalized_ci95"][1] for pts in series.values() for _, s in pts] + [100.0])
    for ax, key in zip(axes, order):
        for other in order:
            if other != key:
                pts = series[other]
                ax.plot([n for n, _ in pts], [s["normalized"] for _, s in pts], color="0.82", linewidth=0.8)
        ax.plot([n for n, _ in pre], [s["normalized"] for _, s in pre], "--", color="black", linewidth=1)
        pts, color = series[key], method_color(key)
        x = [n for n, _ in pts]
        ax.fill_between(x, [s["normalized_ci95"][0] for _, s in pts], [s["normalized_ci95"][1] for _, s in pts],
                        color=color, alpha=0.3, linewidth=0)
        ax.plot(x, [s["normalized"] for _, s in pts], "-o", color=color, linewidth=2, markersize=4)
        ax.scatter([n for n, s in pts for _ in s["per_draw"]], [v for _, s in pts for v in s["per_draw"]],
                   color=color, s=8, alpha=0.7, zorder=3)
        ax.axhline(100.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(key, fontsize=10, color=color, fontweight="bold")
        ax.set_xticks(ns)
        ax.set_ylim(low - 3, high + 3)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    g0 = groups[0]
    fig.suptitle(f"{g0.backbone} · {g0.track}: Avg. Normalized vs number of merged tasks N (mean over draws, 95 % "
                 "band, dots = draws; dashed = pretrained, dotted = LoRA)", fontsize=10)
    fig.supxlabel("N", fontsize=9)
    fig.supylabel("Avg. Normalized (%)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def dot_whisker_png(g: Group) -> bytes:
    """One N: each method's mean with its 95 % CI, best at the top; the pretrained row dashed."""
    m = sorted(g.stats["methods"].items(), key=lambda kv: kv[1]["normalized"])
    fig = Figure(figsize=(7.5, 0.9 + 0.32 * len(m)))
    ax = fig.add_subplot()
    for i, (key, s) in enumerate(m):
        color = method_color(key)
        ax.plot(s["normalized_ci95"], [i, i], color=color, linewidth=2.5)
        ax.plot([s["normalized"]], [i], "o", color=color, markersize=6)
    pre = g.stats["pretrained"]["normalized"]
    ax.axvline(pre, color="black", linestyle="--", linewidth=1, label=f"pretrained {pre:.1f}")
    ax.axvline(100.0, color="grey", linestyle=":", linewidth=1, label="LoRA = 100")
    ax.set_yticks(range(len(m)), [k for k, _ in m])
    for label, (key, _) in zip(ax.get_yticklabels(), m):
        label.set_color(method_color(key))
    ax.set_xlabel("Avg. Normalized (%), mean and 95 % bootstrap CI")
    ax.set_title(g.title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def track_png(groups: list[Group]) -> bytes:
    """A backbone's track: small multiples against N, or one dot-and-whisker chart when it has one N."""
    return small_multiples_png(groups) if len({g.n_tasks for g in groups}) > 1 else dot_whisker_png(groups[0])


def heatmap_png(g: Group) -> bytes:
    """Rows × (draw, task), coloured by 100 · score / LoRA score, annotated with the raw score."""
    columns, body = task_columns(g), task_rows(g)
    lora = next(r for r in body if r.key == LORA)
    ref = [c.sort for c in lora.cells[1:]]
    ratio = [[100.0 * c.sort / r if r else 0.0 for c, r in zip(row.cells[1:], ref)] for row in body]
    labels = [r.key for r in body]
    fig = Figure(figsize=(1.6 + 0.75 * len(columns) + 0.06 * max(map(len, labels)), 1.0 + 0.36 * len(labels)))
    ax = fig.add_subplot()
    vmax = max(100.0, max(max(r) for r in ratio))
    image = ax.imshow(ratio, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    for i, row in enumerate(body):
        for j, cell in enumerate(row.cells[1:]):
            ax.text(j, i, cell.value, ha="center", va="center", fontsize=7.5,
                    color="black" if ratio[i][j] / vmax > 0.6 else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(f"{g.title}: per-task score (colour: % of LoRA)", fontsize=9)
    fig.colorbar(image, ax=ax, label="% of LoRA score")
    return _png(fig)
