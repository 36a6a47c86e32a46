"""Normalized scores, as the protocol defines them.

normalized(method) = mean over tasks t of 100 · score_method(t) / score_lora(t): a mean of per-task
ratios, not clipped at 100. Scores are on the 0–100 scale (accuracy ×100; Spearman ρ ×100).
"""
from __future__ import annotations

from typing import Mapping


def normalized(scores: Mapping[str, float], lora: Mapping[str, float]) -> float:
    """Mean over the tasks of ``scores`` of 100 · scores[t] / lora[t]."""
    if not scores:
        raise ValueError("normalized score of an empty task set")
    missing = sorted(set(scores) - set(lora))
    if missing:
        raise ValueError(f"no LoRA score for task(s) {missing}: the normalized score needs the LoRA row")
    zero = sorted(t for t in scores if lora[t] == 0)
    if zero:
        raise ValueError(f"LoRA score is 0 on task(s) {zero}: the normalized score is undefined there")
    return sum(100.0 * scores[t] / lora[t] for t in scores) / len(scores)
