"""Headless Chromium for the leaderboard page tests: the DOM after the page script ran, its tables, and how wide
the page and each table box lay out at a window width."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

# Appended to a copy of the page (never to the product): after layout, write the widths into the DOM.
MEASURE = """<script>
window.addEventListener("load", function () {
  var boxes = Array.prototype.map.call(document.querySelectorAll(".scroll"), function (b) {
    return [b.scrollWidth, b.clientWidth];
  });
  var out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({page: document.documentElement.scrollWidth, window: window.innerWidth,
                                    boxes: boxes});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required in CI (Debian packages chromium, chromium-driver)")
    pytest.skip("chromium is not installed (apt-get install chromium); the page test needs a browser")


def _run(args: list[str], tmp_path: Path, width: int) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / f'chromium-profile-{width}'}", f"--window-size={width},2000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def chromium_dom(page: Path, tmp_path: Path, fragment: str = "", width: int = 1400) -> str:
    """The DOM after the page's script ran (``--dump-dom``)."""
    return _run(["--virtual-time-budget=5000", "--dump-dom", f"{page.as_uri()}{fragment}"], tmp_path, width).stdout


def measure(page: Path, tmp_path: Path, width: int) -> dict:
    """{page, window, boxes: [[scrollWidth, clientWidth] per table box]} of the page laid out at ``width``."""
    copy = tmp_path / f"measure-{width}.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = chromium_dom(copy, tmp_path, width=width)
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    return json.loads(found.group(1).replace("&quot;", '"'))


def screenshot(page: Path, tmp_path: Path, width: int, height: int = 2400) -> Path:
    shot = tmp_path / f"page-{width}.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / f'chromium-shot-{width}'}", f"--window-size={width},{height}",
           f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=180, check=True)
    return shot


class Tables(HTMLParser):
    """Every ``table.sortable``: its header labels and its rows (data-method, cells as text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.ready = False
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
        elif tag == "table" and "sortable" in (a.get("class") or "").split():
            self.tables.append({"headers": [], "rows": [], "sort": {}})
        elif not self.tables:
            return
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and not self._in_head:
            self.tables[-1]["rows"].append({"method": a.get("data-method"), "class": a.get("class", ""),
                                            "cells": []})
        elif tag in ("th", "td"):
            self._cell = []
            if self._in_head and a.get("aria-sort"):
                self.tables[-1]["sort"] = {len(self.tables[-1]["headers"]): a["aria-sort"]}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("th", "td") and self._cell is not None and self.tables:
            text = " ".join("".join(self._cell).split())
            if self._in_head:
                self.tables[-1]["headers"].append(text)
            else:
                self.tables[-1]["rows"][-1]["cells"].append(text)
            self._cell = None


def tables(dom: str) -> Tables:
    parsed = Tables()
    parsed.feed(dom)
    return parsed
