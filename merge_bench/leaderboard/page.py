"""The static ``leaderboard/index.html``: one self-contained file (inline CSS and a small sorting script; no
network). Every table is complete HTML in its default order, so the page reads the same without JavaScript;
the script only sorts a table by a clicked column header.

Decisions: a table wider than the page scrolls inside its own box with the row label pinned, so the page
itself never scrolls sideways (checked at 1,400 and 390 px); an interval sits under its value, which keeps
columns narrow; the prose is the README's inline Markdown, rendered here (bold and code only)."""
from __future__ import annotations

import html
import re
from importlib.resources import files

from matplotlib.colors import to_hex

from .groups import Group, finding
from .plots import method_color
from .readme import INTRO, NOT_COVERED, PROTOCOL_NOTES, RETAINED, TRACKS_TEXT, heatmap_name, plot_name
from .tracks import TrackComparison
from .tracks import finding as tracks_finding
from .views import COLUMNS, TRACK_COLUMNS, Column, TableRow, draws_text, notes, rows, task_columns, task_rows, \
    track_rows

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _asset(name: str) -> str:
    return files("merge_bench.leaderboard").joinpath("assets", name).read_text(encoding="utf-8")


def inline_markdown(text: str) -> str:
    """HTML of a line of inline Markdown: ``**bold**`` and ```code```, everything else escaped."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)


def _th(c: Column) -> str:
    kind = "num" if c.numeric else "text"
    return f'<th scope="col" data-type="{kind}">{html.escape(c.label)}</th>'


def _label(r: TableRow) -> str:
    if r.kind != "method":
        return f'<th scope="row" class="label">{html.escape(r.key)}</th>'
    color = to_hex(method_color(r.key))
    return (f'<th scope="row" class="label" data-sort="{html.escape(r.key)}"><span class="swatch" '
            f'style="background:{color}"></span><code>{html.escape(r.key)}</code></th>')


def _td(c, numeric: bool) -> str:
    sort = "" if c.sort is None else f' data-sort="{c.sort:.6g}"'
    ci = f' <span class="ci">{html.escape(c.ci)}</span>' if c.ci else ""
    cls = "num" if numeric else "text"
    return f'<td class="{cls}"{sort}>{html.escape(c.value)}{ci}</td>'


def table(columns: list[Column], body: list[TableRow], caption: str) -> str:
    head = "".join(_th(c) for c in columns)
    trs = []
    for r in body:
        cls = " ".join(x for x in (r.kind, "tied" if r.tied else "") if x)
        cells = "".join(_td(c, col.numeric) for c, col in zip(r.cells[1:], columns[1:]))
        trs.append(f'<tr class="{cls}" data-method="{html.escape(r.key)}">{_label(r)}{cells}</tr>')
    return (f'<div class="scroll"><table class="sortable"><caption>{html.escape(caption)}</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>')


def _img(src: str, alt: str) -> str:
    return f'<a href="{html.escape(src)}"><img class="plot" loading="lazy" alt="{html.escape(alt)}" src="{html.escape(src)}"></a>'


def groups_html(groups: list[Group]) -> str:
    parts, seen = [], set()
    for g in groups:
        if (g.backbone, g.track) not in seen:
            seen.add((g.backbone, g.track))
            same = [x for x in groups if (x.backbone, x.track) == (g.backbone, g.track)]
            parts.append(f"<h3>{html.escape(g.backbone)} · track {html.escape(g.track)}</h3>"
                         + _img(f"plots/{plot_name(g)}", f"Avg. Normalized with 95 % CIs, {g.backbone} · {g.track}")
                         + "<ul class=\"findings\">" + "".join(f"<li>{html.escape(finding(x))}</li>" for x in same)
                         + "</ul>")
        task_cols = [Column("Row", False), *(Column(c) for c in task_columns(g))]
        parts.append(
            f'<section class="group" data-n="{g.n_tasks}" data-track="{html.escape(g.track)}">'
            f"<h4>{html.escape(g.title)}</h4><p class=\"tasks\">Draws (seed {g.draw_set.seed}): "
            f"{html.escape(draws_text(g))}</p>"
            + table(COLUMNS, rows(g), f"{g.title}: methods best first, then the reference rows")
            + table(task_cols, task_rows(g), "Per task: score and Wilson 95 % CI")
            + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes(g))
            + _img(f"plots/{heatmap_name(g)}", f"per-task scores, {g.title}") + "</section>")
    return "".join(parts)


def tracks_html(comparisons: list[TrackComparison]) -> str:
    parts = []
    for backbone in dict.fromkeys(c.backbone for c in comparisons):
        parts.append(f"<h3>{html.escape(backbone)} · tuned vs default</h3>")
        for c in (x for x in comparisons if x.backbone == backbone):
            parts.append(f'<section class="tracks" data-n="{c.n_tasks}"><h4>{html.escape(c.title)}</h4>'
                         f'<p class="tasks">Draws (seed {c.draw_set.seed}): {html.escape(draws_text(c))}</p>'
                         + table(TRACK_COLUMNS, track_rows(c), c.title)
                         + f'<p class="finding">{html.escape(tracks_finding(c))}</p></section>')
    return "".join(parts)


def render_page(groups: list[Group], comparisons: list[TrackComparison] = ()) -> str:
    title = "merge-bench leaderboard"
    body = "".join(f"<p>{inline_markdown(t)}</p>" for t in (INTRO, RETAINED, NOT_COVERED))
    body += groups_html(list(groups)) if groups else "<p>No entries yet.</p>"
    if comparisons:
        body += f"<h2>Tuned vs default</h2><p>{inline_markdown(TRACKS_TEXT)}</p>" + tracks_html(list(comparisons))
    notes = "".join(f"<li>{inline_markdown(n)}</li>" for n in PROTOCOL_NOTES)
    page = _asset("index.html")
    for marker, value in (("@@CSS@@", _asset("page.css")), ("@@JS@@", _asset("page.js")),
                          ("@@TITLE@@", html.escape(title)), ("@@NOTES@@", notes), ("@@BODY@@", body)):
        page = page.replace(marker, value)
    return page
