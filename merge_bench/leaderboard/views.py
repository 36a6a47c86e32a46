"""Groups and track comparisons as table rows, rendered as terminal text and Markdown (the page's HTML is in
``page``). One table per group ranks the methods; a second gives every row's per-task scores with their Wilson
intervals, the pretrained and LoRA rows beside the methods."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from .groups import Group, finding, per_task
from .tracks import TrackComparison, TrackRow
from .tracks import finding as tracks_finding

PRETRAINED = "Pretrained"
LORA = "LoRA (individual)"


def format_value(v: Any) -> str:
    """Parameters as a reader types them: ``true``, ``20`` (not ``20.0``), ``0.3``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in sorted(params.items())) or "-"


def _z(x: float, fmt: str) -> float:
    """``x`` with a negative zero after rounding made positive: -0.004 prints as 0.00, not -0.00."""
    digits = int(fmt[1:-1]) if fmt.startswith(".") and fmt.endswith("f") else None
    return (round(x, digits) + 0.0) if digits is not None else x


def iv(ci, fmt: str = ".2f") -> str:
    return f"[{_z(ci[0], fmt):{fmt}}, {_z(ci[1], fmt):{fmt}}]" if ci else ""


@dataclass(frozen=True)
class Cell:
    """A value and its interval (both text), and the number it sorts by (None: empty)."""

    value: str
    ci: str = ""
    sort: float | None = None

    def text(self) -> str:
        return f"{self.value} {self.ci}".strip()


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = True


COLUMNS = [Column("Method", False), Column("Parameters", False), Column("Data", False),
           Column("Avg. Normalized [95 % CI]"), Column("Retained gain [95 % CI]"),
           Column("Δ vs simple_avg [95 % CI]"), Column("P(Δ>0)"), Column("Rank [95 %]"), Column("Tied 1st", False),
           Column("Per draw")]


@dataclass(frozen=True)
class TableRow:
    kind: str           # "method", "pretrained" or "lora"
    key: str            # the method key, or the reference row's label
    cells: list[Cell]
    tied: bool = False


def _num(x: float | None, ci=None, fmt: str = ".2f", sign: bool = False) -> Cell:
    if x is None:
        return Cell("n/a" if ci is None else "")
    x0 = _z(x, fmt)
    return Cell(f"{x0:+{fmt}}" if sign else f"{x0:{fmt}}", iv(ci) if not sign or ci is None
                else f"[{_z(ci[0], fmt):+.2f}, {_z(ci[1], fmt):+.2f}]", float(x))


def _params(e) -> str:
    """The parameters a row ran at: the entry's, or on the tuned track what each draw's search chose."""
    return format_params(e.method.params) if e.tuning is None else f"tuned: {chosen(e)}"


def chosen(e) -> str:
    """What each draw's search chose (once when all agree, with the validation evaluations it spent)."""
    picks = [format_params({k: v for k, v in t.chosen.items() if k != "seed"}) for t in e.tuning]
    if len(set(picks)) == 1:
        return f"{picks[0]} ({sum(t.evaluations for t in e.tuning)} val. evals)"
    return "; ".join(f"d{t.index}: {c}" for t, c in zip(e.tuning, picks))


def rows(g: Group) -> list[TableRow]:
    """Methods best first, then the pretrained and LoRA reference rows (never ranked)."""
    out = []
    for e in sorted(g.entries, key=lambda x: (-g.stats["methods"][x.method.key]["normalized"], x.method.key)):
        s = g.stats["methods"][e.method.key]
        tied = bool(s["tied_with_leader"])
        out.append(TableRow("method", e.method.key, [
            Cell(e.method.key), Cell(_params(e)), Cell(e.data),
            _num(s["normalized"], s["normalized_ci95"]), _num(s["retained"], s["retained_ci95"]),
            _num(s["delta"], s["delta_ci95"], sign=True) if s["delta"] is not None else Cell(""),
            Cell(f"{s['p_delta_gt0']:.2f}", sort=s["p_delta_gt0"]) if s["p_delta_gt0"] is not None else Cell(""),
            Cell(str(s["rank"]), iv(s["rank_ci95"], "d"), s["rank"]), Cell("=" if tied else ""),
            Cell(", ".join(f"{v:.2f}" for v in s["per_draw"]))], tied))
    p = g.stats["pretrained"]
    out.append(TableRow("pretrained", PRETRAINED, [
        Cell(PRETRAINED), Cell("-"), Cell("-"), _num(p["normalized"], p["normalized_ci95"]),
        _num(p["retained"], p["retained_ci95"]), Cell(""), Cell(""), Cell(""), Cell(""),
        Cell(", ".join(f"{v:.2f}" for v in p["per_draw"]))]))
    defined = p["retained"] is not None
    out.append(TableRow("lora", LORA, [
        Cell(LORA), Cell("-"), Cell("-"), Cell("100.00", "", 100.0),
        Cell("100.00" if defined else "n/a", "", 100.0 if defined else None), Cell(""), Cell(""), Cell(""), Cell(""),
        Cell("")]))
    return out


def task_columns(g: Group) -> list[str]:
    """The per-task table's columns: the task, prefixed with its draw when there are several."""
    several = len(g.draw_set.draws) > 1
    return [f"d{d.index} {t}" if several else t for d in g.draw_set.draws for t in d.tasks]


def task_rows(g: Group) -> list[TableRow]:
    """Every row of the group's table (same order) with its per-task scores and Wilson 95 % intervals."""
    out = []
    for r in rows(g):
        column = r.key if r.kind == "method" else r.kind
        cells = [Cell(f"{x['score']:.1f}", iv(x["wilson95"], ".1f"), x["score"]) for x in per_task(g, column)]
        out.append(TableRow(r.kind, r.key, [Cell(r.key), *cells], r.tied))
    return out


def reported_note(backbone: str, draws: list[list[str]]) -> str:
    """The STAR paper's numbers for a one-draw group whose tasks are a set it reports on, never ranked with ours."""
    from ..backbones import get_backbone

    if len(draws) != 1:
        return ""
    try:
        found = get_backbone(backbone).reported_for(list(draws[0]))
    except (KeyError, ValueError, FileNotFoundError):  # a backbone this install does not know
        return ""
    return " ".join(f"Reported by the STAR paper for this task set, not reproduced here ({r.source}): Avg. Normalized "
                    + ", ".join(f"{name} {value:.2f}" for name, value in r.scores.items()) + "." for r in found)


def notes(g: Group) -> list[str]:
    """What is said under a group's tables: tasks left out of the retained gain, the paper's numbers."""
    return [x for x in (excluded_note(g), reported_note(g.backbone, [d.tasks for d in g.draw_set.draws])) if x]


def excluded_note(g: Group) -> str:
    ex = g.stats["retained_excluded"]
    return (f"Left out of the retained gain (the LoRA does not beat pretrained there): {', '.join(ex)}." if ex
            else "")


def _label(r: TableRow, markdown: bool) -> str:
    if not markdown:
        return r.key
    return f"`{r.key}`" if r.kind == "method" else f"*{r.key}*"


def _table(headers: list[str], body: list[TableRow], tablefmt: str, text_columns: int) -> str:
    md = tablefmt == "github"
    cells = [[_label(r, md), *(c.text().replace("|", "\\|") if md else c.text() for c in r.cells[1:])] for r in body]
    align = ["left"] * text_columns + ["right"] * (len(headers) - text_columns)
    return tabulate(cells, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def render(g: Group, tablefmt: str = "simple") -> str:
    return _table([c.label for c in COLUMNS], rows(g), tablefmt, 3)


def render_tasks(g: Group, tablefmt: str = "simple") -> str:
    return _table(["Row", *task_columns(g)], task_rows(g), tablefmt, 1)


def draws_text(g: Group | TrackComparison) -> str:
    return "; ".join(f"d{d.index}: {', '.join(d.tasks)}" for d in g.draw_set.draws)


def show_text(groups: list[Group]) -> str:
    parts = []
    for g in groups:
        parts.append(f"{g.title}\n  draws: {draws_text(g)}\n{render(g)}\n{finding(g)}\n\nPer task (score, Wilson "
                     f"95 % CI):\n{render_tasks(g)}" + "".join(f"\n{n}" for n in notes(g)))
    return "\n\n".join(parts)


def markdown(groups: list[Group], plot_name, heatmap_name) -> list[str]:
    lines: list[str] = []
    seen = set()
    for g in groups:
        if (g.backbone, g.track) not in seen:
            seen.add((g.backbone, g.track))
            lines += [f"### {g.backbone} · track {g.track}", "",
                      f"![Avg. Normalized with 95 % CIs, {g.backbone} · {g.track}](plots/{plot_name(g)})", ""]
            lines += [f"- {finding(x)}" for x in groups if (x.backbone, x.track) == (g.backbone, g.track)] + [""]
        lines += [f"#### {g.title}", "", f"Draws (seed {g.draw_set.seed}): {draws_text(g)}", "",
                  render(g, "github"), "", "Per task: score [Wilson 95 % CI].", "", render_tasks(g, "github"), ""]
        lines += [x for n in notes(g) for x in (n, "")]
        lines += [f"![per-task scores, {g.title}](plots/{heatmap_name(g)})", ""]
    return lines


# ---- tuned vs default: one table per (backbone, N, draw set) on both tracks ----

# The paired difference first: it is what the table is for.
TRACK_COLUMNS = [Column("Method", False), Column("Δ tuned − default [95 % CI]"), Column("P(Δ>0)"),
                 Column("Rank move"), Column("Default [95 % CI]"), Column("Default rank"), Column("Default data", False),
                 Column("Tuned [95 % CI]"), Column("Tuned rank"), Column("Tuned data", False),
                 Column("Tuned parameters", False)]


def _move(r: TrackRow) -> str:
    """Places gained when tuned: ↑ climbs, ↓ falls."""
    n = r.rank_change
    return f"↑{n}" if n > 0 else f"↓{-n}" if n < 0 else "0"


def track_rows(c: TrackComparison) -> list[TableRow]:
    out = []
    for r in c.rows:
        d, t = r.default_stats, r.tuned_stats
        out.append(TableRow("method", r.key, [
            Cell(r.key), _num(r.delta, r.delta_ci95, sign=True), Cell(f"{r.p_delta_gt0:.2f}", sort=r.p_delta_gt0),
            Cell(_move(r), sort=r.rank_change), _num(d["normalized"], d["normalized_ci95"]),
            Cell(str(d["rank"]), sort=d["rank"]), Cell(r.default.data), _num(t["normalized"], t["normalized_ci95"]),
            Cell(str(t["rank"]), sort=t["rank"]), Cell(r.tuned.data), Cell(chosen(r.tuned))]))
    return out


def render_tracks(c: TrackComparison, tablefmt: str = "simple") -> str:
    md = tablefmt == "github"
    body = [[_label(r, md), *(x.text().replace("|", "\\|") if md else x.text() for x in r.cells[1:])]
            for r in track_rows(c)]
    align = ["left" if not col.numeric else "right" for col in TRACK_COLUMNS]
    return tabulate(body, headers=[c.label for c in TRACK_COLUMNS], tablefmt=tablefmt, disable_numparse=True,
                    colalign=align)


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


CSV_FIELDS = ["backbone", "track", "n_tasks", "draw_set", "kind", "method", "params", "data", "normalized",
              "normalized_ci_low", "normalized_ci_high", "retained", "retained_ci_low", "retained_ci_high",
              "retained_excluded", "rank", "delta_vs_simple_avg", "delta_ci_low", "delta_ci_high", "draw", "task",
              "score", "wilson_low", "wilson_high"]


def show_csv(rows_: list[dict[str, Any]]) -> str:
    """``show --json``'s rows flat (tidy): one line per row, draw and task, the row's scores repeated on each."""
    import csv
    import io

    def lo_hi(ci) -> tuple[Any, Any]:
        return (ci[0], ci[1]) if ci else ("", "")

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows_:
        head = [r["backbone"], r["track"], r["n_tasks"], r["draw_set"], r["kind"], r["method"],
                format_params(r["params"]) if "params" in r else "", r.get("data", ""), r["normalized"],
                *lo_hi(r["ci95"]), "" if r["retained"] is None else r["retained"], *lo_hi(r["retained_ci95"]),
                ";".join(r["retained_excluded"]), r.get("rank") or "",
                "" if r.get("delta_vs_simple_avg") is None else r["delta_vs_simple_avg"], *lo_hi(r.get("delta_ci95"))]
        for t in r["per_task"]:
            writer.writerow([*head, t["draw"], t["task"], t["score"], *lo_hi(t["wilson95"])])
    return buffer.getvalue()
