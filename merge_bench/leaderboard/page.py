"""The static ``leaderboard/index.html``: one self-contained file (inline CSS, JS and data; no network)."""
from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any

from .readme import PROTOCOL_NOTES, V2_INTRO, V2_NOT_COVERED, V2_TRACKS
from .sweep_views import html_section, tracks_html
from .sweeps import GroupV2
from .tracks import TrackComparison
from .schema import LEADERBOARD_VERSION, PROTOCOL_VERSION
from .tables import Group


def _asset(name: str) -> str:
    return files("merge_bench.leaderboard").joinpath("assets", name).read_text(encoding="utf-8")


def page_data(groups: list[Group]) -> dict[str, Any]:
    out = []
    for group in groups:
        pre = next(r for r in group.rows if r.kind == "pretrained")
        lora = next(r for r in group.rows if r.kind == "lora")
        rows = []
        for row in group.rows:
            item: dict[str, Any] = {"label": row.label, "kind": row.kind, "params": row.params,
                                    "normalized": row.normalized, "scores": row.scores}
            if row.entry is not None:
                item["method"] = row.entry.method.model_dump(mode="json")
                item["provenance"] = row.entry.provenance.model_dump(mode="json")
                item["entry_sha256"] = row.entry.entry_sha256
            rows.append(item)
        out.append({"backbone": group.backbone, "task_set": group.task_set, "tasks": group.tasks,
                    "pretrained": pre.scores, "lora": lora.scores, "rows": rows})
    return {"leaderboard_version": LEADERBOARD_VERSION, "groups": out}


def _embed_json(data: Any) -> str:
    # Inside <script>, "</script>" or "<!--" in a string would end or confuse the element; "<" only
    # occurs inside JSON strings, where \u003c means the same character.
    return json.dumps(data, ensure_ascii=False, sort_keys=True, allow_nan=False).replace("<", "\\u003c")


def render_page(groups: list[Group], groups_v2: list[GroupV2] = (), v2_plot=None,
                comparisons: list[TrackComparison] = ()) -> str:
    title = "merge-bench leaderboard"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in PROTOCOL_NOTES)
    v2 = (f"<p>{html.escape(V2_INTRO)}</p><p>{html.escape(V2_NOT_COVERED)}</p>"
          + (html_section(list(groups_v2), v2_plot) if groups_v2 else "<p>No protocol v2 entries yet.</p>"))
    if comparisons:
        v2 += f"<p>{html.escape(V2_TRACKS)}</p>" + tracks_html(list(comparisons))
    # Replace the data last: it is the only part that could contain the other markers' text.
    page = _asset("index.html")
    for marker, value in (("@@CSS@@", _asset("page.css")), ("@@JS@@", _asset("page.js")),
                          ("@@TITLE@@", html.escape(title)), ("@@PROTOCOL@@", str(PROTOCOL_VERSION)),
                          ("@@NOTES@@", notes), ("@@V2@@", v2), ("@@DATA@@", _embed_json(page_data(groups)))):
        page = page.replace(marker, value)
    return page
