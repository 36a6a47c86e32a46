"""Protocol v2 groups rendered: text and Markdown tables, the page's HTML section, the score-vs-N plot."""
from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from tabulate import tabulate

from .sweeps import GroupV2, finding
from .tables import format_params
from .tracks import TrackComparison, TrackRow
from .tracks import finding as tracks_finding

HEADERS = ["Method", "Parameters", "Data", "Avg. Normalized", "95 % CI", "per draw", "Δ vs simple_avg", "Δ 95 % CI",
           "P(Δ>0)", "rank", "rank 95 %", "tied 1st"]


def _iv(ci, fmt: str = ".2f") -> str:
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else ""


def rows(g: GroupV2) -> list[dict[str, Any]]:
    """The table's rows: methods best first, then the pretrained reference (which is never ranked)."""
    out = []
    for e in sorted(g.entries, key=lambda x: (-g.stats["methods"][x.method.key]["normalized"], x.method.key)):
        s = g.stats["methods"][e.method.key]
        out.append({"label": e.method.key, "kind": "method", "params": _params(e), "data": e.data,
                    "normalized": s["normalized"], "ci": _iv(s["normalized_ci95"]),
                    "per_draw": ", ".join(f"{v:.2f}" for v in s["per_draw"]),
                    "delta": "" if s["delta"] is None else f"{s['delta']:+.2f}", "delta_ci": _iv(s["delta_ci95"]),
                    "p": "" if s["p_delta_gt0"] is None else f"{s['p_delta_gt0']:.2f}", "rank": str(s["rank"]),
                    "rank_ci": _iv(s["rank_ci95"], "d"), "tied": bool(s["tied_with_leader"])})
    p = g.stats["pretrained"]
    out.append({"label": "Pretrained", "kind": "pretrained", "params": "-", "data": "-", "normalized": p["normalized"],
                "ci": _iv(p["normalized_ci95"]), "per_draw": ", ".join(f"{v:.2f}" for v in p["per_draw"]),
                "delta": "", "delta_ci": "", "p": "", "rank": "", "rank_ci": "", "tied": False})
    return out


def _params(e) -> str:
    """The parameters a row ran at: the entry's, or on the tuned track what each draw's search chose."""
    return format_params(e.method.params) if e.tuning is None else f"tuned: {_chosen(e)}"


def _chosen(e) -> str:
    """What each draw's search chose (once when all agree, with the validation evaluations it spent)."""
    chosen = [format_params({k: v for k, v in t.chosen.items() if k != "seed"}) for t in e.tuning]
    if len(set(chosen)) == 1:
        return f"{chosen[0]} ({sum(t.evaluations for t in e.tuning)} val. evals)"
    return "; ".join(f"d{t.index}: {c}" for t, c in zip(e.tuning, chosen))


def _cells(r: dict[str, Any], markdown: bool) -> list[str]:
    label = (f"`{r['label']}`" if r["kind"] == "method" else f"*{r['label']}*") if markdown else r["label"]
    params = r["params"].replace("|", "\\|") if markdown else r["params"]
    return [label, params, r["data"], f"{r['normalized']:.2f}", r["ci"], r["per_draw"], r["delta"], r["delta_ci"], r["p"],
            r["rank"], r["rank_ci"], "=" if r["tied"] else ""]


def render(g: GroupV2, tablefmt: str = "simple") -> str:
    md = tablefmt == "github"
    align = ("left", "left", "left") + ("right",) * (len(HEADERS) - 3)
    return tabulate([_cells(r, md) for r in rows(g)], headers=HEADERS, tablefmt=tablefmt, disable_numparse=True,
                    colalign=align)


def draws_text(g: GroupV2 | TrackComparison) -> str:
    return "; ".join(f"d{d.index}: {', '.join(d.tasks)}" for d in g.draw_set.draws)


def show_text_v2(groups: list[GroupV2]) -> str:
    parts = [f"{g.title}\n  draws: {draws_text(g)}\n{render(g)}\n{finding(g)}" for g in groups]
    return "\n\n".join(parts)


def markdown(groups: list[GroupV2], plot_name) -> list[str]:
    lines: list[str] = []
    seen = set()
    for g in groups:
        if (g.backbone, g.track) not in seen:
            seen.add((g.backbone, g.track))
            lines += [f"### {g.backbone} · track {g.track}", "",
                      f"![normalized score vs N with 95 % bands, {g.backbone}](plots/{plot_name(g)})", ""]
            lines += [f"- {finding(x)}" for x in groups if (x.backbone, x.track) == (g.backbone, g.track)] + [""]
        lines += [f"#### {g.title}", "", f"Draws (seed {g.draw_set.seed}): {draws_text(g)}", "",
                  render(g, "github"), ""]
    return lines


def html_section(groups: list[GroupV2], plot_name) -> str:
    """Static tables (no script needed); rows tied with the leader carry class ``tied`` (shaded)."""
    parts, seen = [], set()
    for g in groups:
        if (g.backbone, g.track) not in seen:
            seen.add((g.backbone, g.track))
            parts.append(f'<h3>{html.escape(g.backbone)} · track {html.escape(g.track)}</h3>'
                         f'<img class="plot" alt="normalized score vs N, {html.escape(g.backbone)}" '
                         f'src="plots/{html.escape(plot_name(g))}">')
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
        body = []
        for r in rows(g):
            cls = " ".join(c for c in ("method" if r["kind"] == "method" else "ref", "tied" if r["tied"] else "") if c)
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, False))
            body.append(f'<tr class="{cls}" data-method="{html.escape(r["label"])}">{cells}</tr>')
        parts.append(f'<section class="v2group" data-n="{g.n_tasks}" data-track="{html.escape(g.track)}">'
                     f'<h4>{html.escape(g.title)}</h4><p class="tasks">Draws: {html.escape(draws_text(g))}</p>'
                     f'<table class="v2"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
                     f'<p class="finding">{html.escape(finding(g))}</p></section>')
    return "".join(parts)


# ---- tuned vs default: one table per (backbone, N, draw set) on both tracks ----

# The paired difference first: it is what the table is for, and it stays in view where the table scrolls.
TRACK_HEADERS = ["Method", "Δ tuned − default", "Δ 95 % CI", "P(Δ>0)", "rank move", "default [95 % CI]",
                 "default rank", "default data", "tuned [95 % CI]", "tuned rank", "tuned data", "tuned parameters"]
DELTA_COLUMN = TRACK_HEADERS.index("Δ tuned − default")
TEXT_COLUMNS = {TRACK_HEADERS.index(h) for h in ("Method", "default data", "tuned data", "tuned parameters")}


def _mean_ci(s: dict[str, Any]) -> str:
    return f"{s['normalized']:.2f} {_iv(s['normalized_ci95'])}"


def _move(r: TrackRow) -> str:
    """Places gained when tuned: ↑ climbs, ↓ falls."""
    n = r.rank_change
    return f"↑{n}" if n > 0 else f"↓{-n}" if n < 0 else "0"


def _track_cells(r: TrackRow, markdown: bool) -> list[str]:
    chosen = _chosen(r.tuned)
    return [f"`{r.key}`" if markdown else r.key, f"{r.delta:+.2f}", _iv(r.delta_ci95), f"{r.p_delta_gt0:.2f}",
            _move(r), _mean_ci(r.default_stats), str(r.default_stats["rank"]), r.default.data,
            _mean_ci(r.tuned_stats), str(r.tuned_stats["rank"]), r.tuned.data,
            chosen.replace("|", "\\|") if markdown else chosen]


def render_tracks(c: TrackComparison, tablefmt: str = "simple") -> str:
    align = ["left" if i in TEXT_COLUMNS else "right" for i in range(len(TRACK_HEADERS))]
    return tabulate([_track_cells(r, tablefmt == "github") for r in c.rows], headers=TRACK_HEADERS,
                    tablefmt=tablefmt, disable_numparse=True, colalign=align)


def show_text_tracks(comparisons: list[TrackComparison]) -> str:
    return "\n\n".join(f"{c.title}\n  draws: {draws_text(c)}\n{render_tracks(c)}\n{tracks_finding(c)}"
                       for c in comparisons)


def tracks_markdown(comparisons: list[TrackComparison]) -> list[str]:
    lines: list[str] = []
    for backbone in dict.fromkeys(c.backbone for c in comparisons):
        lines += [f"### {backbone} · tuned vs default", ""]
        for c in (x for x in comparisons if x.backbone == backbone):
            lines += [f"#### {c.title}", "", f"Draws (seed {c.draw_set.seed}): {draws_text(c)}", "",
                      render_tracks(c, "github"), "", tracks_finding(c), ""]
    return lines


def _text(column: int) -> str:
    return ' class="text"' if column in TEXT_COLUMNS else ""


def tracks_html(comparisons: list[TrackComparison]) -> str:
    """Static tables; the Δ cell is classed ``gain`` or ``loss`` when its CI excludes 0."""
    parts = []
    for backbone in dict.fromkeys(c.backbone for c in comparisons):
        parts.append(f"<h3>{html.escape(backbone)} · tuned vs default</h3>")
        head = "".join(f"<th{_text(i)}>{html.escape(h)}</th>" for i, h in enumerate(TRACK_HEADERS))
        for c in (x for x in comparisons if x.backbone == backbone):
            body = []
            for r in c.rows:
                cells = [f"<td{_text(i)}>{html.escape(x)}</td>" for i, x in enumerate(_track_cells(r, False))]
                sign = " gain" if r.delta_ci95[0] > 0 else " loss" if r.delta_ci95[1] < 0 else ""
                cells[DELTA_COLUMN] = f'<td class="delta{sign}">{html.escape(f"{r.delta:+.2f}")}</td>'
                body.append(f'<tr class="cmp" data-method="{html.escape(r.key)}">{"".join(cells)}</tr>')
            parts.append(f'<section class="v2tracks" data-n="{c.n_tasks}"><h4>{html.escape(c.title)}</h4>'
                         f'<p class="tasks">Draws: {html.escape(draws_text(c))}</p>'
                         f'<table class="v2 tracks"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                         f'</table><p class="finding">{html.escape(tracks_finding(c))}</p></section>')
    return "".join(parts)


def score_vs_n_png(groups: list[GroupV2]) -> bytes:
    """One line per method (mean over draws against N), its 95 % CI as a band, each draw as a dot."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from .plots import _png

    series: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for g in groups:
        for key, s in g.stats["methods"].items():
            series[key].append((g.n_tasks, s))
        series["Pretrained"].append((g.n_tasks, g.stats["pretrained"]))
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    colors = colormaps["tab10" if len(series) <= 11 else "tab20"].colors
    for i, (label, pts) in enumerate(sorted(series.items(), key=lambda kv: (kv[0] == "Pretrained", kv[0]))):
        pts.sort(key=lambda p: p[0])
        color = "black" if label == "Pretrained" else colors[i % len(colors)]
        ns = [n for n, _ in pts]
        ax.plot(ns, [s["normalized"] for _, s in pts], "--" if label == "Pretrained" else "-", marker="o",
                color=color, label=label, linewidth=1.2)
        ax.fill_between(ns, [s["normalized_ci95"][0] for _, s in pts], [s["normalized_ci95"][1] for _, s in pts],
                        color=color, alpha=0.12, linewidth=0)
        ax.scatter([n for n, s in pts for _ in s["per_draw"]], [v for _, s in pts for v in s["per_draw"]],
                   color=color, s=9, alpha=0.6)
    ax.axhline(100.0, color="grey", linewidth=0.8, linestyle=":", label="LoRA (individual) = 100")
    ns = sorted({g.n_tasks for g in groups})
    ax.set_xticks(ns)
    if len(ns) == 1:
        ax.set_xlim(ns[0] - 1, ns[0] + 1)
    ax.set_xlabel("number of merged tasks N")
    ax.set_ylabel("Avg. Normalized (%)")
    ax.set_title(f"{groups[0].backbone} · {groups[0].track}: mean over draws, 95 % bootstrap band, dots = draws")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return _png(fig)
