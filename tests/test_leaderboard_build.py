"""``merge-bench leaderboard build`` and ``show``: README tables, the static page (in headless Chromium), plots."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from merge_bench.cli import main
from merge_bench.leaderboard import build_leaderboard, entries_from_record, load_entries, task_set_id, write_entry
from merge_bench.leaderboard.tables import LORA_LABEL, PRETRAINED_LABEL, group_entries

from test_leaderboard import LORA, METHODS, PRETRAINED, TASKS3, TRUTH, _edit, _file, make_record

TASKS2 = ["sentiment", "topic"]
TASKS4 = ["add", "nli", "sentiment", "topic"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Two backbones; tiny with task sets of 2, 3 and 4 tasks. Built once for the module."""
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    for tasks, methods in ((TASKS2, METHODS), (TASKS3, METHODS), (TASKS4, {"simple_avg": METHODS["simple_avg"]})):
        for entry in entries_from_record(make_record(tasks, methods)):
            write_entry(root, entry)
    for entry in entries_from_record(make_record(TASKS2, {"simple_avg": METHODS["simple_avg"]}, backbone="other")):
        write_entry(root, entry)
    build_leaderboard(root)
    return root


def _expected_rows(tasks: list[str], methods) -> list[tuple[str, float, list[float]]]:
    """(label, normalized, per-task scores) sorted best first, from the fabricated truth."""
    def norm(scores):
        return sum(100 * scores[t] / LORA[t] for t in tasks) / len(tasks)
    rows = [(key, norm(TRUTH[key]), [TRUTH[key][t] for t in tasks]) for key in methods]
    rows.append((PRETRAINED_LABEL, norm(PRETRAINED), [PRETRAINED[t] for t in tasks]))
    rows.append((LORA_LABEL, 100.0, [LORA[t] for t in tasks]))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def parse_readme_tables(text: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """``#### title`` (a v1 table) → (header cells, body rows) of the markdown table under it."""
    tables, title = {}, None
    for block in re.split(r"\n(?=#{2,4} )", text):
        head = block.splitlines()[0]
        if head.startswith("#### "):
            title = head[5:].strip()
            lines = [line for line in block.splitlines() if line.startswith("|")]
            cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
            tables[title] = (cells[0], cells[2:])
    return tables


def test_readme_tables_match_the_entries(built):
    text = (built / "README.md").read_text()
    tables = parse_readme_tables(text)
    assert list(tables) == [f"other · {task_set_id(TASKS2)}", f"tiny · {task_set_id(TASKS2)}",
                            f"tiny · {task_set_id(TASKS3)}", f"tiny · {task_set_id(TASKS4)}"]
    for tasks, methods in ((TASKS2, METHODS), (TASKS3, METHODS), (TASKS4, {"simple_avg": 0})):
        header, body = tables[f"tiny · {task_set_id(tasks)}"]
        assert header == ["Method", "Parameters", "Avg. Normalized", *tasks]
        expected = _expected_rows(tasks, methods)
        assert [r[0].strip("`*") for r in body] == [label for label, _, _ in expected]
        for row, (_, normalized, scores) in zip(body, expected):
            assert float(row[2]) == pytest.approx(normalized, abs=0.005)
            assert [float(x) for x in row[3:]] == pytest.approx(scores, abs=0.005)
    header, body = tables[f"tiny · {task_set_id(TASKS3)}"]
    params = {r[0].strip("`*"): r[1] for r in body}
    assert params["task_arithmetic[lam=0.3]"] == "lam=0.3" and params["simple_avg"] == "-"
    assert "## Protocol notes" in text and "Flan hella" in text and "previous item's label" in text
    for image in re.findall(r"\]\((plots/[^)]+)\)", text):
        assert (built / image).is_file(), image


def test_plots_are_valid_non_blank_pngs(built):
    plots = sorted((built / "plots").glob("*.png"))
    names = {p.name for p in plots}
    assert names == {"tiny_normalized_vs_tasks.png", "other_normalized_vs_tasks.png",
                     *(f"tiny_{task_set_id(t)}_heatmap.png" for t in (TASKS2, TASKS3, TASKS4)),
                     f"other_{task_set_id(TASKS2)}_heatmap.png"}
    for path in plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 10, f"{path.name} looks blank"


def test_build_removes_stale_plots_and_refuses_invalid_entries(built, tmp_path):
    root = tmp_path / "lb"
    shutil.copytree(built, root)
    (root / "plots" / "gone_heatmap.png").write_bytes(b"old")
    build_leaderboard(root)
    assert not (root / "plots" / "gone_heatmap.png").exists()
    _edit(_file(root, "simple_avg"), lambda d: d["scores"].update(nli=1.0), reseal=False)
    with pytest.raises(ValueError, match=r"fix them before building:\n.*simple_avg.json: entry_sha256"):
        build_leaderboard(root)


def test_json_schema_file_is_written(built):
    schema = json.loads((built / "entry.schema.json").read_text())
    assert schema["properties"]["schema_version"]["const"] == 1
    assert "entry_sha256" in schema["required"]


def test_show_filters(built, capsys):
    assert main(["leaderboard", "show", "--root", str(built), "--backbone", "tiny",
                 "--task-set", task_set_id(TASKS3)]) == 0
    out = capsys.readouterr().out
    assert f"tiny · {task_set_id(TASKS3)} (3 tasks: nli, sentiment, topic)" in out
    assert task_set_id(TASKS2) not in out and "other" not in out
    lines = [line.split() for line in out.splitlines() if line.startswith(("simple_avg", "task_arith"))]
    assert [line[0] for line in lines] == ["task_arithmetic[lam=0.3]", "task_arithmetic", "simple_avg"]
    assert main(["leaderboard", "show", "--root", str(built), "--backbone", "nope"]) == 0
    assert "no leaderboard entries for backbone=nope" in capsys.readouterr().out


# --- the static page --------------------------------------------------------------------------

def test_page_is_self_contained(built):
    page = (built / "index.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert not re.search(r"@import|url\(", page)
    assert "<script src" not in page and "<link" not in page
    data = json.loads(re.search(r'<script id="lb-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [g["task_set"] for g in data["groups"] if g["backbone"] == "tiny"] == [
        task_set_id(TASKS2), task_set_id(TASKS3), task_set_id(TASKS4)]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required in CI (Debian packages chromium, chromium-driver)")
    pytest.skip("chromium is not installed (apt-get install chromium); the page test needs a browser")


class _Dom(HTMLParser):
    """Collects, per section, the board rows (data-key, cells by data-col) and detail rows."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self.ready = False
        self._row: dict | None = None
        self._detail: dict | None = None
        self._cell: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
        elif tag == "section" and "group" in (a.get("class") or "").split():
            self.sections.append({"backbone": a["data-backbone"], "task_set": a["data-task-set"],
                                  "hidden": "hidden" in a["class"].split(), "rows": [], "details": {}, "sort": {}})
        elif tag == "th" and "data-col" in a and self.sections and a.get("aria-sort"):
            self.sections[-1]["sort"] = {a["data-col"]: a["aria-sort"]}
        elif tag == "tr" and "data-key" in a and self.sections:
            self._row = {"key": a["data-key"], "kind": a["data-kind"], "cells": {}}
            self.sections[-1]["rows"].append(self._row)
        elif tag == "tr" and "data-detail-for" in a:
            self._detail = {"hidden": "hidden" in a["class"].split(), "tasks": {}}
            self.sections[-1]["details"][a["data-detail-for"]] = self._detail
        elif tag == "tr" and "data-task" in a and self._detail is not None:
            self._cell = a["data-task"]
            self._text = []
        elif tag == "td" and self._row is not None and "data-col" in a:
            self._row["cells"][a["data-col"]] = a["data-value"]

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "tr" and self._cell is not None:
            self._detail["tasks"][self._cell] = [t for t in self._text if t.strip()]
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table" and self._row is None and self._cell is None:
            self._detail = None


def render(page: Path, fragment: str, tmp_path: Path) -> _Dom:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", f"{page.as_uri()}{fragment}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Dom()
    dom.feed(out.stdout)
    assert dom.ready, "the page script did not finish (no data-ready on <body>)"
    return dom


def _section(dom: _Dom, backbone: str, tasks: list[str]) -> dict:
    return next(s for s in dom.sections if s.get("backbone") == backbone and s["task_set"] == task_set_id(tasks))


def test_page_renders_the_rows_sorted_like_the_readme(built, tmp_path):
    dom = render(built / "index.html", "", tmp_path)
    assert len(dom.sections) == 4 and not any(s["hidden"] for s in dom.sections)
    groups = group_entries(load_entries(built))
    for section, group in zip(dom.sections, groups):
        assert [r["key"] for r in section["rows"]] == [r.label for r in group.rows]
        for row, expected in zip(section["rows"], group.rows):
            assert float(row["cells"]["normalized"]) == pytest.approx(expected.normalized)
            assert {t: float(row["cells"][f"t:{t}"]) for t in group.tasks} == pytest.approx(expected.scores)
        assert section["sort"] == {"normalized": "descending"}


@pytest.mark.parametrize("column, direction", [("t:sentiment", "ascending"), ("t:nli", "descending"),
                                               ("method", "ascending"), ("normalized", "ascending")])
def test_page_sorts_by_a_clicked_column(built, tmp_path, column, direction):
    dom = render(built / "index.html", f"#sort={column}&dir={direction}", tmp_path)
    section = _section(dom, "tiny", TASKS3)
    assert section["sort"] == {column: direction}
    values = [r["cells"][column] for r in section["rows"]]
    keyed = [v.lower() for v in values] if column == "method" else [float(v) for v in values]
    assert keyed == sorted(keyed, reverse=direction == "descending")
    assert len(set(keyed)) == len(keyed) == 5  # a real reordering, not ties


def test_page_filters_and_opens_a_breakdown(built, tmp_path):
    fragment = f"#backbone=tiny&taskset={task_set_id(TASKS3)}&open=task_arithmetic%5Blam%3D0.3%5D"
    dom = render(built / "index.html", fragment, tmp_path)
    visible = [(s["backbone"], s["task_set"]) for s in dom.sections if not s["hidden"]]
    assert visible == [("tiny", task_set_id(TASKS3))]
    detail = _section(dom, "tiny", TASKS3)["details"]["task_arithmetic[lam=0.3]"]
    assert not detail["hidden"]
    # task | score | LoRA | % of LoRA | pretrained
    assert detail["tasks"]["nli"] == ["nli", "41.00", "88.50", f"{100 * 41 / 88.5:.2f}", "33.00"]
    dom = render(built / "index.html", "#backbone=other", tmp_path)
    assert [s["backbone"] for s in dom.sections if not s["hidden"]] == ["other"]
