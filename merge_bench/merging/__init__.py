"""The merging wing: LoRA and full-checkpoint inputs (``adapters``), task-vector maths (``delta``,
``selection``, ``methods/``), the streaming engine, the writers and the one-call API (``api``).

Imports only ``io``. This file stays torch-free: the CLI reads ``FORMATS`` from it to build its parser.
"""

# What ``merge-bench merge --format`` and ``merge(..., format=)`` accept; ``writers`` implements them.
FORMATS = ("auto", "peft", "full", "delta")
