"""Calibration prompts for data-requiring merges (RegMean's Grams): a task's training rows, as the model sees
its prompts in evaluation.

A task's calibration set is a seeded ``rand 256`` of its ``train`` split (MNLI's in the ``mnli`` config;
finance's from the 90 % of train its test holdout leaves), checked disjoint from the test items like the
validation variants (``evaluation.validation``); each row is rendered by the task's own ``doc_to_text`` and,
for chat suites, the backbone's chat template with the generation prompt. A task outside our hook (the
micro suite's plain JSON tasks) calibrates on its validation variant's documents instead. A JSONL file of
prompts (``{"prompt": ...}`` or a string per line) works too, for adapters outside any suite.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .validation import carved_from_train

SIZE = 256  # calibration examples per task (the issue's default)


def calibration_kwargs(dataset_kwargs: dict[str, Any], size: int = SIZE) -> dict[str, Any]:
    """A test task's ``dataset_kwargs`` turned to its calibration rows."""
    return carved_from_train(dict(dataset_kwargs), f"rand {size}")


def task_prompts(backbone, short: str, manager, tokenizer=None, size: int = SIZE) -> list[str]:
    """The calibration prompts of one of ``backbone``'s tasks, rendered as in evaluation."""
    from .data import task_docs
    from .quiet import quiet

    name = backbone.lm_eval_task(short)
    cfg = manager.task_index[name].cfg or {}
    with quiet():
        task = manager.load([name])["tasks"][name]
    kwargs = cfg.get("dataset_kwargs") or {}
    if "gold_field" in kwargs:   # our hook: the train split
        meta = cfg.get("metadata") or {}
        docs = task_docs(**calibration_kwargs(kwargs, size), labels=meta.get("labels"),
                         task=f"{meta.get('suite')}_{meta.get('short')}")
    else:                        # a plain lm-eval task: its validation variant's documents
        val = f"{name}_val"
        if val not in manager.task_index:
            raise ValueError(f"task {name}: no training split to calibrate on and no validation variant {val}")
        with quiet():
            docs = list(manager.load([val])["tasks"][val].eval_docs)[:size]
    texts = [task.doc_to_text(d) for d in docs]
    if backbone.chat_template:
        if tokenizer is None:
            raise ValueError("chat-template prompts need the base model's tokenizer")
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True) for t in texts]
    return texts


def file_prompts(path: Path) -> list[str]:
    """Prompts from a JSONL file: one ``{"prompt": ...}`` object or JSON string per line."""
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        text = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{number}: expected a non-empty string or {{\"prompt\": ...}}, got {item!r}")
        prompts.append(text)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts
