"""lm-eval hooks for the smol task YAMLs (``!function utils.<name>`` resolves to this file); the logic
lives in the merge_bench package."""
from merge_bench.evaluation.data import load_task_docs, load_validation_docs
from merge_bench.evaluation.scoring import process_label

__all__ = ["load_task_docs", "load_validation_docs", "process_label"]
