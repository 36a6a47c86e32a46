"""What a backbone is: base model, one adapter per task, task variants and eval defaults.

Kept apart from the registry (``__init__``) so the backbone builders (tiny, micro) import these
types without importing the registry that imports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal


@dataclass(frozen=True)
class AdapterRef:
    id: str
    revision: str | None = None
    kind: Literal["lora", "full"] = "lora"
    targets: tuple[str, ...] | None = None  # for full checkpoints: which matrices form the task vector


@dataclass(frozen=True)
class EvalDefaults:
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 32
    max_length: int = 2048
    dtype: str = "bfloat16"


@dataclass(frozen=True)
class Reported:
    """Published numbers for one task set (Avg. Normalized, ×100): printed beside a run of that set as
    "reported by the STAR paper, not reproduced here"."""

    source: str
    tasks: tuple[str, ...]
    scores: dict[str, float]  # "pretrained" and method names


@dataclass(frozen=True)
class Backbone:
    name: str
    suite: str  # task variants: lm-eval tasks are named f"{suite}_{short}"
    base_id: str
    adapters: dict[str, AdapterRef]  # short task name -> its LoRA
    base_revision: str | None = None
    chat_template: bool = True
    seq2seq: bool = False
    excluded_by_default: tuple[str, ...] = ()  # tasks not drawn by --n-tasks (still nameable with --tasks)
    eval: EvalDefaults = field(default_factory=EvalDefaults)
    # Builds (or finds) the base model directory locally; used by the embedded backbone.
    local_base: Callable[[], Path] | None = None
    task_dirs: tuple[Path, ...] = ()  # extra lm-eval include paths (tests, plugins)
    paper_tasks: tuple[str, ...] = ()  # `--tasks paper`: the set the STAR README reports for this backbone
    reported: tuple[Reported, ...] = ()
    # "default", or "reference": the STAR reference's items, inputs and scoring (evaluation/reference.py),
    # evaluated through each task's ``_ref`` variant; set per run (``RunConfig.protocol``), never in the registry.
    protocol: str = "default"

    @property
    def tasks(self) -> list[str]:
        return list(self.adapters)

    @property
    def pickable_tasks(self) -> list[str]:
        return [t for t in self.adapters if t not in self.excluded_by_default]

    def lm_eval_task(self, short: str) -> str:
        return f"{self.suite}_{short}" + ("_ref" if self.protocol == "reference" else "")

    def reported_for(self, tasks: list[str]) -> list[Reported]:
        return [r for r in self.reported if set(r.tasks) == set(tasks)]
