"""Leaderboard entries → table rows, grouped per backbone × task set (shared by README, show, HTML)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from tabulate import tabulate

from ..backbones import get_backbone
from ..backbones.spec import Reported
from .schema import Entry

PRETRAINED_LABEL = "Pretrained"
LORA_LABEL = "LoRA (individual)"


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # "method", "pretrained" or "lora"
    params: dict[str, Any]
    normalized: float
    scores: dict[str, float]
    entry: Entry | None = None


@dataclass
class Group:
    backbone: str
    task_set: str
    tasks: list[str]
    rows: list[Row] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)  # the STAR paper's numbers for this task set

    @property
    def title(self) -> str:
        return f"{self.backbone} · {self.task_set}"


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def group_entries(entries: Iterable[Entry], backbone: str | None = None, task_set: str | None = None) -> list[Group]:
    """Groups sorted by backbone, then task-set size, then id; rows by Avg. Normalized, best first.

    The pretrained and LoRA reference rows come from the group's first entry (validate checks
    that every entry of a group agrees on them) and are sorted in with the methods, so the table
    shows at a glance which methods beat the base model.
    """
    buckets: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        if backbone is not None and entry.backbone != backbone:
            continue
        if task_set is not None and entry.task_set.id != task_set:
            continue
        buckets[(entry.backbone, entry.task_set.id)].append(entry)
    groups = []
    for (bb, ts), members in buckets.items():
        members.sort(key=lambda e: e.method.key)
        ref = members[0]
        rows = [Row(e.method.key, "method", e.method.params, e.normalized, dict(e.scores), e) for e in members]
        rows.append(Row(PRETRAINED_LABEL, "pretrained", {}, ref.pretrained.normalized, dict(ref.pretrained.scores)))
        rows.append(Row(LORA_LABEL, "lora", {}, ref.lora.normalized, dict(ref.lora.scores)))
        rows.sort(key=lambda r: (-r.normalized, r.label))
        groups.append(Group(bb, ts, list(ref.task_set.tasks), rows, _reported(bb, list(ref.task_set.tasks))))
    groups.sort(key=lambda g: (g.backbone, len(g.tasks), g.task_set))
    return groups


def _reported(backbone: str, tasks: list[str]) -> list[Reported]:
    try:
        return get_backbone(backbone).reported_for(tasks)
    except (ValueError, FileNotFoundError):  # a backbone this install does not know
        return []


def table_rows(group: Group, markdown: bool = False) -> tuple[list[str], list[list[str]]]:
    headers = ["Method", "Parameters", "Avg. Normalized", *group.tasks]
    rows = []
    for row in group.rows:
        if markdown:
            label = f"`{row.label}`" if row.kind == "method" else f"*{row.label}*"
            params = format_params(row.params).replace("|", "\\|")
        else:
            label, params = row.label, format_params(row.params)
        rows.append([label, params, f"{row.normalized:.2f}", *(f"{row.scores[t]:.2f}" for t in group.tasks)])
    for r in group.reported:  # beside the measured rows, never ranked with them
        for name, value in r.scores.items():
            label = f"{name} (reported by the STAR paper, not reproduced here)"
            rows.append([f"*{label}*" if markdown else label, r.source, f"{value:.2f}", *([""] * len(group.tasks))])
    return headers, rows


def render_table(group: Group, tablefmt: str = "simple") -> str:
    headers, rows = table_rows(group, markdown=tablefmt == "github")
    align = ("left", "left") + ("right",) * (len(headers) - 2)
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def show_text(entries: Iterable[Entry], backbone: str | None = None, task_set: str | None = None) -> str:
    """Terminal tables for ``merge-bench leaderboard show``."""
    groups = group_entries(entries, backbone, task_set)
    if not groups:
        wanted = ", ".join(f"{k}={v}" for k, v in (("backbone", backbone), ("task set", task_set)) if v)
        return f"no leaderboard entries{' for ' + wanted if wanted else ''}"
    parts = []
    for group in groups:
        parts.append(f"{group.title} ({len(group.tasks)} tasks: {', '.join(group.tasks)})\n{render_table(group)}")
    return "\n\n".join(parts)
