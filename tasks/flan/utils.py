"""lm-eval hooks for the task YAMLs in this folder.

``!function utils.<name>`` in a YAML resolves to the ``utils.py`` beside that YAML (or beside the
template that names it); the logic lives in the merge_bench package, so every folder re-exports it.
"""
from merge_bench.evaluation.data import load_task_docs, load_validation_docs
from merge_bench.evaluation.reference import load_reference_docs, process_reference
from merge_bench.evaluation.scoring import (
    process_contains,
    process_label,
    process_number,
    process_number_clamped,
    process_option,
    process_token_f1,
    spearman_aggregation,
)

__all__ = [
    "load_reference_docs",
    "load_task_docs",
    "load_validation_docs",
    "process_contains",
    "process_label",
    "process_number",
    "process_number_clamped",
    "process_option",
    "process_reference",
    "process_token_f1",
    "spearman_aggregation",
]
