"""Raw answers, as lm-eval's ``--log_samples`` keeps them: every evaluation's items with what the model wrote.

A run writes ``<record>.samples.jsonl.gz`` beside its record: one JSON line per (row, draw, task, item) with
``row`` ("pretrained", "lora" or the method key), ``draw`` (a sweep's ``n<N>-d<index>``; "" for a plain run and
for the pretrained and LoRA rows, which every draw shares), ``task``, ``index`` (the item's place in the task's
sampled order, as in the per-item scores), ``id`` (the sampled document id), ``prompt_sha256`` (lm-eval's prompt
hash), ``response`` (the generated text), ``filtered`` (the text the answer was read from, after the task's
filter) and ``score``. The lines come from the result cache, where each evaluation's samples are stored beside
its result; an evaluation cached before samples were kept has none (the command says so).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterable

from ..io.files import atomic_write_bytes

SUFFIX = ".samples.jsonl.gz"


def samples_path(record_path: Path) -> Path:
    """``run.json`` → ``run.samples.jsonl.gz`` beside it."""
    record_path = Path(record_path)
    return record_path.with_name(record_path.name.removesuffix(".json") + SUFFIX)


def collect(preps: Iterable[Any], draws: Iterable[str]) -> list[dict[str, Any]]:
    """The samples of every (variant, task) of the runs in ``preps`` (one per draw, labelled by ``draws``),
    read from their result cache; the shared pretrained and LoRA rows once."""
    lines: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for prep, draw in zip(preps, draws):
        for job in prep.jobs:
            merged = job.method is not None
            row = job.method.key if merged else job.name.split(":")[0]
            for task in job.tasks:
                if not merged and (row, task) in seen:
                    continue
                seen.add((row, task))
                found = prep.cache.get_samples(prep.key(job.variant, task)) or []
                lines += [{"row": row, "draw": draw if merged else "", "task": task, "index": i, **s}
                          for i, s in enumerate(found)]
    return lines


def write(record_path: Path, lines: list[dict[str, Any]]) -> Path:
    path = samples_path(record_path)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    atomic_write_bytes(path, gzip.compress(text.encode("utf-8"), mtime=0))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    """A samples file, given it or the record beside it."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        path = samples_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: no samples beside this run record (runs keep them since "
                                "merge-bench records raw answers; rerun to get them)")
    try:
        return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a gzipped JSON-lines samples file ({err})") from None


def select(lines: list[dict[str, Any]], row: str, task: str, draw: str | None = None) -> list[dict[str, Any]]:
    """One row's items on one task (of one draw, or of the only draw that has them), in item order."""
    mine = [x for x in lines if x["row"] == row and x["task"] == task and (draw is None or x["draw"] == draw)]
    if not mine:
        rows = sorted({x["row"] for x in lines})
        tasks = sorted({x["task"] for x in lines if x["row"] == row})
        raise ValueError(f"no samples for --method {row} --task {task}" + (f" --draw {draw}" if draw else "")
                         + f"; the file has rows {rows}" + (f" and {row} has tasks {tasks}" if tasks else ""))
    draws = sorted({x["draw"] for x in mine})
    if len(draws) > 1:
        raise ValueError(f"{row} on {task} was evaluated in several draws {draws}: pick one with --draw")
    return sorted(mine, key=lambda x: x["index"])
