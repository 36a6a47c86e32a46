"""The evaluation wing: lm-eval glue (``harness``), the HF and vLLM evaluators, the task registry
(``tasks``: our lm-eval YAMLs), offline data, seeded sampling and label scoring.

Imports ``backbones``, ``merging`` (to apply a merged delta) and ``io``; lm-eval only when a task is built
or evaluated.
"""
