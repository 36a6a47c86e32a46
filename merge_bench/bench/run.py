"""``merge-bench run``: pick tasks, evaluate pretrained / LoRA / every merge, score, record.

The pipeline is a list of evaluation jobs (model variant × task). Each finished job is cached by
content hash (``cache.ResultCache``), so a rerun or an extended run evaluates only what is new.
Merges happen in memory and are swapped into the one loaded base model.
"""
from __future__ import annotations

import random
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate
from tqdm import tqdm

from .. import __version__
from ..backbones import Backbone, get_backbone, resolve
from ..io.files import cache_root, content_hash, dir_sha256, write_json_atomic
from ..merging.methods import available_methods, get_method
from .cache import ResultCache
from .provenance import git_commit, hardware, merge_code_sha256, versions
from .scores import normalized

PROTOCOL = "v1"
# The default method set: the reference's methods plus the mean. `--methods all` runs every one.
DEFAULT_METHODS = ("simple_avg", "task_arithmetic", "ties", "tall_masks", "metagpt", "star", "drm")


@dataclass
class RunConfig:
    backbone: str = "tiny"
    n_tasks: int | None = None
    tasks: list[str] | None = None
    methods: list[str] | None = None  # names or "file.py:Class"; None = DEFAULT_METHODS; ["all"] = every one
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 42
    backend: str = "hf"
    device: str = "cpu"
    limit: int | None = None
    out: Path = Path("runs")
    save_merged: bool = False
    batch_size: int | None = None
    cache_dir: Path | None = None  # result cache; None = $MERGE_BENCH_CACHE/results (check passes a fresh one)


def pick_tasks(backbone: Backbone, n_tasks: int | None, tasks: list[str] | None, seed: int) -> list[str]:
    """``tasks`` as named, or ``n_tasks`` drawn with ``seed`` from the backbone's pickable tasks."""
    if tasks and n_tasks is not None:
        raise ValueError("give --tasks or --n-tasks, not both")
    if tasks:
        unknown = [t for t in tasks if t not in backbone.adapters]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} for backbone {backbone.name}; valid tasks: "
                             f"{', '.join(backbone.tasks)}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"--tasks names a task twice: {tasks}")
        return list(tasks)
    pool = backbone.pickable_tasks
    if n_tasks is None:
        return pool
    if not 1 <= n_tasks <= len(pool):
        raise ValueError(f"--n-tasks must be between 1 and {len(pool)} for backbone {backbone.name}, got {n_tasks}")
    picked = set(random.Random(seed).sample(sorted(pool), n_tasks))
    return [t for t in pool if t in picked]


@dataclass(frozen=True)
class MethodRun:
    key: str  # the row name: "star", or "star[eta=20]" when params differ from defaults
    name: str
    spec: str  # what get_method was given (a name or a file spec)
    config: dict[str, Any]
    code: str  # provenance.merge_code_sha256 of its class: part of the cache key of its scores


def resolve_methods(names: list[str] | None, params: dict[str, dict[str, Any]]) -> list[MethodRun]:
    if names is None:
        names = list(DEFAULT_METHODS)
    elif names == ["all"]:
        names = sorted(available_methods())
    runs = []
    for spec in names:
        cls = get_method(spec)
        overrides = params.get(cls.name, params.get(spec, {}))
        config = cls(**overrides).config  # validates the params before any heavy work
        changed = {k: v for k, v in config.items() if k in overrides}
        key = cls.name + ("[" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) + "]" if changed else "")
        runs.append(MethodRun(key, cls.name, spec, config, merge_code_sha256(cls)))
    stray = sorted(set(params) - {r.name for r in runs} - set(names))
    if stray:
        raise ValueError(f"--param given for method(s) {stray} that are not being run")
    return runs


def run_benchmark(cfg: RunConfig, *, backbone: Backbone | None = None, progress: bool = True) -> dict:
    """Run the protocol and return the run record (also written under ``cfg.out``)."""
    bb = backbone or get_backbone(cfg.backbone)
    tasks = pick_tasks(bb, cfg.n_tasks, cfg.tasks, cfg.seed)
    methods = resolve_methods(cfg.methods, cfg.params)
    if cfg.backend not in ("hf", "vllm"):
        raise ValueError(f"unknown backend {cfg.backend!r}; expected 'hf' or 'vllm'")
    print(f"backbone {bb.name}: {len(tasks)} task(s) {', '.join(tasks)} (seed {cfg.seed})", file=sys.stderr)

    base_dir = bb.local_base() if bb.local_base else resolve(bb.base_id, bb.base_revision)
    adapter_dirs = {t: resolve(bb.adapters[t].id, bb.adapters[t].revision) for t in tasks}
    base_sha = dir_sha256(base_dir)
    adapter_sha = {t: dir_sha256(d) for t, d in adapter_dirs.items()}

    from ..evaluation.harness import describe_tasks
    from ..evaluation.tasks import task_manager

    manager = task_manager(bb.task_dirs)
    infos = describe_tasks(bb, tasks, manager, cfg.limit)
    cache = ResultCache(cfg.cache_dir or cache_root() / "results")

    # The evaluation stack is part of a result's identity: an upgrade of any of these, or another batch size
    # (padding changes the numerics), evaluates again instead of reading back a stale score.
    stack_versions = versions()
    stack = {k: v for k, v in stack_versions.items()
             if k in ("torch", "transformers", "peft", "lm_eval") or (k == "vllm" and cfg.backend == "vllm")}

    def key(variant: dict, task: str) -> dict:
        info = infos[task]
        return {"protocol": PROTOCOL, "base": base_sha, "variant": variant, "backend": cfg.backend,
                "task": info.lm_eval_task, "task_version": info.version, "task_config": info.yaml_sha256,
                "sample_ids": info.sample_ids_sha256, "limit": cfg.limit, "device_kind": cfg.device.split(":")[0],
                "batch_size": cfg.batch_size or bb.eval.batch_size, "stack": stack}

    merged_inputs = [{"task": t, "sha256": adapter_sha[t]} for t in tasks]
    jobs: list[tuple[str, dict, list[str]]] = [("pretrained", {"kind": "pretrained"}, tasks)]
    jobs += [(f"lora:{t}", {"kind": "lora", "adapter": adapter_sha[t]}, [t]) for t in tasks]
    jobs += [(f"merged:{m.key}", {"kind": "merged", "method": m.name, "params": m.config, "inputs": merged_inputs,
                                  "code": m.code}, tasks) for m in methods]
    pending = {name: [t for t in ts if cache.get(key(v, t)) is None] for name, v, ts in jobs}
    todo = sum(len(ts) for ts in pending.values())

    evaluator = None
    bar = tqdm(total=todo, desc="evaluating", unit="task", disable=not progress or todo == 0)
    for name, variant, ts in jobs:
        if not pending[name]:
            continue
        if evaluator is None:
            evaluator = _make_evaluator(cfg, bb, base_dir, manager)
        bar.set_postfix_str(name)
        extra: dict[str, Any] = {}
        if variant["kind"] == "pretrained":
            context = nullcontext()
        elif variant["kind"] == "lora":
            context = evaluator.lora(adapter_dirs[ts[0]])
        else:
            method = next(m for m in methods if f"merged:{m.key}" == name)
            result = _merge(method, [adapter_dirs[t] for t in tasks], base_dir, cfg)
            extra["merged_sha256"] = merged_sha256(result)
            if cfg.save_merged:
                from ..merging.writers import write

                write(result, Path(cfg.out) / "merged" / method.key, overwrite=True)
            context = evaluator.merged(result)
        with context:
            for t in pending[name]:  # one task at a time: each finished task is cached at once
                s = evaluator.evaluate([t])[t]
                cache.put(key(variant, t), {"score": s.score, "metric": s.metric, "n": s.n, **extra})
                bar.update(1)
    bar.close()

    def row(variant: dict, ts: list[str]) -> dict[str, dict]:
        return {t: cache.get(key(variant, t)) for t in ts}

    lora = {t: row(v, ts)[t]["score"] for name, v, ts in jobs if v["kind"] == "lora" for t in ts}
    pretrained = {t: r["score"] for t, r in row(jobs[0][1], tasks).items()}
    record: dict[str, Any] = {
        "record_version": 1,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merge_bench": {"version": __version__, "git_commit": git_commit()},
        "versions": stack_versions,
        "hardware": hardware(cfg.device),
        "config": {**{k: v for k, v in asdict(cfg).items() if k not in ("out", "n_tasks", "save_merged", "cache_dir")},
                   "backbone": bb.name, "tasks": tasks, "methods": [m.spec for m in methods]},
        "backbone": {"name": bb.name, "base_id": bb.base_id, "base_revision": bb.base_revision,
                     "base_sha256": base_sha},
        "adapters": {t: {"id": bb.adapters[t].id, "revision": bb.adapters[t].revision, "sha256": adapter_sha[t]}
                     for t in tasks},
        "tasks": {t: {**infos[t].to_dict(), "metric": row(jobs[0][1], [t])[t]["metric"]} for t in tasks},
        "pretrained": {"scores": pretrained, "normalized": normalized(pretrained, lora)},
        "lora": {"scores": lora},
        "methods": {},
    }
    for (name, variant, ts), m in zip(jobs[1 + len(tasks):], methods):
        results = row(variant, ts)
        scores = {t: r["score"] for t, r in results.items()}
        record["methods"][m.key] = {"method": m.name, "params": m.config, "scores": scores,
                                    "normalized": normalized(scores, lora),
                                    "merged_sha256": results[ts[0]].get("merged_sha256"), "merge_code_sha256": m.code}
    record["record_sha256"] = content_hash(record)
    path = Path(cfg.out) / f"{bb.name}-{content_hash(tasks)[:8]}-{record['created'].replace(':', '')}.json"
    write_json_atomic(path, record)
    print(results_table(record))
    print(f"run record: {path}", file=sys.stderr)
    return record


def _make_evaluator(cfg: RunConfig, bb: Backbone, base_dir: Path, manager):
    if cfg.backend == "vllm":
        from ..evaluation.vllm_backend import VLLMEvaluator

        return VLLMEvaluator(bb, base_dir, manager, device=cfg.device, limit=cfg.limit, seed=cfg.seed)
    from ..evaluation.hf_backend import HFEvaluator

    return HFEvaluator(bb, base_dir, manager, device=cfg.device, batch_size=cfg.batch_size,
                       limit=cfg.limit, seed=cfg.seed)


def _merge(method: MethodRun, adapters: list[Path], base_dir: Path, cfg: RunConfig):
    from ..merging.engine import merge
    from ..merging.numerics import Numerics

    return merge(method.spec, adapters, params=method.config, base=base_dir,
                 numerics=Numerics.from_names(cfg.device, "float32"))


def merged_sha256(result) -> str:
    """A hash of the merged deltas themselves (factors for low-rank results), in float32."""
    import hashlib

    import torch

    from ..merging.delta import LowRank

    h = hashlib.sha256()
    for key, delta in sorted(result.deltas.items()):
        h.update(key.encode())
        for t in (delta.B, delta.A) if isinstance(delta, LowRank) else (delta,):
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def results_table(record: dict) -> str:
    """Rows pretrained, LoRA and each method; a column per task and Avg. Normalized."""
    tasks = record["config"]["tasks"]
    rows = [["pretrained", *(record["pretrained"]["scores"][t] for t in tasks), record["pretrained"]["normalized"]],
            ["LoRA", *(record["lora"]["scores"][t] for t in tasks), 100.0]]
    for key, m in record["methods"].items():
        rows.append([key, *(m["scores"][t] for t in tasks), m["normalized"]])
    return tabulate(rows, headers=["model", *tasks, "Avg. Normalized"], floatfmt=".2f")
