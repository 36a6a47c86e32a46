"""The run's table: raw per-task scores and Avg. Normalized per row with its 95 % CI (protocol v2's paired
bootstrap over the items), footnotes for undefined or unstable ratios, and the numbers the STAR paper
reports for the same task set."""
from __future__ import annotations

from typing import Any, Sequence

from tabulate import tabulate

from ..backbones.spec import Reported
from . import stats
from .scores import undefined_tasks, unstable_tasks

NA = "n/a"


def normalization(lora: dict[str, float], pretrained: dict[str, float]) -> dict[str, Any]:
    """Which tasks make the normalized score undefined (LoRA ≤ 0) or unstable (LoRA ≤ pretrained), and why."""
    undefined, unstable = undefined_tasks(lora), unstable_tasks(lora, pretrained)
    notes = []
    if undefined:
        notes.append(f"the LoRA scores ≤ 0 on {', '.join(undefined)}: the ratio merged/LoRA is undefined there, so "
                     f"Avg. Normalized is {NA}")
    if unstable:
        notes.append(f"the LoRA does not beat pretrained on {', '.join(unstable)}: an unstable denominator, "
                     "so Avg. Normalized is not comparable there")
    return {"undefined": undefined, "unstable": unstable, "note": "; ".join(notes) or None}


def add_uncertainty(record: dict, B: int = stats.DEFAULT_B) -> None:
    """Bootstrap the record's per-item scores (one task draw): ``normalized_ci95`` on the pretrained row and
    every method, and the whole result under ``stats``. Undefined ratios leave them out (n/a)."""
    if record["normalization"]["undefined"] or not record["methods"]:
        record["stats"] = None
        return
    result = stats.bootstrap([stats_draw(record)], B=B).to_dict()
    record["stats"] = result
    rows = [(record["pretrained"], result["pretrained"])] + [(m, result["methods"][k]) for k, m in record["methods"].items()]
    for row, st in rows:
        row["normalized_ci95"] = st["normalized_ci95"]
        row["retained"], row["retained_ci95"] = st["retained"], st["retained_ci95"]
    record["normalization"]["retained_excluded"] = result["retained_excluded"]


def stats_draw(record: dict) -> stats.Draw:
    """One run record's per-item scores as a bootstrap draw."""
    items = record["per_item"]
    return stats.Draw({t: stats.TaskItems("spearman" if info["metric"] == "spearman" else "mean",
                                          items["pretrained"][t], items["lora"][t],
                                          {k: items["methods"][k][t] for k in record["methods"]})
                       for t, info in record["tasks"].items()})


def _ci(row: dict, field: str = "normalized_ci95") -> str:
    ci = row.get(field)
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _retained(row: dict) -> str:
    value = row.get("retained")
    return "" if value is None else f"{value:.2f} {_ci(row, 'retained_ci95')}"


def _fmt(value: float | None) -> str | float:
    return NA if value is None else value


def results_table(record: dict, reported: Sequence[Reported] = ()) -> str:
    """Rows pretrained, LoRA and each method; a column per task and Avg. Normalized; then the paper's rows."""
    tasks = record["config"]["tasks"]
    norm = record.get("normalization") or {"undefined": [], "unstable": [], "note": None}
    flagged = set(norm["undefined"]) | set(norm["unstable"])
    headers = ["model", *(f"{t}*" if t in flagged else t for t in tasks), "Avg. Normalized", "95 % CI",
               "Retained gain [95 % CI]"]
    lora_norm = NA if norm["undefined"] else 100.0
    pre = record["pretrained"]
    rows = [["pretrained", *(pre["scores"][t] for t in tasks), _fmt(pre["normalized"]), _ci(pre), _retained(pre)],
            ["LoRA", *(record["lora"]["scores"][t] for t in tasks), lora_norm, "", "100.00"]]
    for key, m in record["methods"].items():
        rows.append([key, *(m["scores"][t] for t in tasks), _fmt(m["normalized"]), _ci(m), _retained(m)])
    text = tabulate(rows, headers=headers, floatfmt=".2f")
    if norm["note"]:
        text += f"\n* {norm['note']}"
    if norm.get("retained_excluded"):
        text += (f"\nRetained gain = 100·(merged − pretrained)/(LoRA − pretrained), averaged over the tasks; left "
                 f"out where the LoRA does not beat pretrained: {', '.join(norm['retained_excluded'])}")
    for r in reported:
        paper = [[f"{name} (reported)", *([""] * len(tasks)), value, "", ""] for name, value in r.scores.items()]
        text += (f"\n\nReported by the STAR paper for this task set, not reproduced here ({r.source}):\n"
                 + tabulate(paper, headers=headers, floatfmt=".2f"))
    return text
