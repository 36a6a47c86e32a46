"""Normalized scores, as the protocol defines them.

normalized(method) = mean over tasks t of 100 · score_method(t) / score_lora(t): a mean of per-task
ratios, not clipped at 100. Scores are on the 0–100 scale (accuracy ×100; Spearman ρ ×100).

A LoRA score ≤ 0 makes its task's ratio undefined: a run reports the normalized score as n/a with the
reason (``undefined_tasks``) instead of aborting after its evaluations. A LoRA that does not beat the
pretrained model is a denominator that measures noise: such tasks are flagged (``unstable_tasks``).
"""
from __future__ import annotations

from typing import Mapping


def undefined_tasks(lora: Mapping[str, float]) -> list[str]:
    """Tasks whose ratio is undefined: the LoRA scores ≤ 0 there."""
    return sorted(t for t, s in lora.items() if s <= 0)


def unstable_tasks(lora: Mapping[str, float], pretrained: Mapping[str, float]) -> list[str]:
    """Tasks where the LoRA does not beat the pretrained model (and its ratio is defined)."""
    return sorted(t for t, s in lora.items() if s > 0 and t in pretrained and s <= pretrained[t])


def normalized(scores: Mapping[str, float], lora: Mapping[str, float]) -> float:
    """Mean over the tasks of ``scores`` of 100 · scores[t] / lora[t]; a ValueError where undefined."""
    if not scores:
        raise ValueError("normalized score of an empty task set")
    missing = sorted(set(scores) - set(lora))
    if missing:
        raise ValueError(f"no LoRA score for task(s) {missing}: the normalized score needs the LoRA row")
    undefined = undefined_tasks({t: lora[t] for t in scores})
    if undefined:
        raise ValueError(f"LoRA score is ≤ 0 on task(s) {undefined}: the normalized score is undefined there")
    return sum(100.0 * scores[t] / lora[t] for t in scores) / len(scores)


def normalized_or_none(scores: Mapping[str, float], lora: Mapping[str, float]) -> float | None:
    """``normalized``, or None (n/a) when a task's ratio is undefined."""
    return None if undefined_tasks({t: lora[t] for t in scores}) else normalized(scores, lora)
