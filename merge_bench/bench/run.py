"""``merge-bench run``: pick tasks, evaluate pretrained / LoRA / every merge, score, record.

The pipeline is a list of evaluation jobs (model variant × task, ``plan.build_jobs``). Each finished job
is cached by content hash (``cache.ResultCache``), so a rerun or an extended run evaluates only what is
new. Merges happen in memory and are swapped into the one loaded base model. A run that finished its
evaluations always prints its table and writes its record, even where a normalized score is undefined.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..backbones import Backbone, get_backbone
from ..io.files import content_hash
from .executor import Executor
from . import samples
from .outputs import check_out_dir, save_record
from .plan import (DEFAULT_METHODS, PROTOCOL, Job, MethodRun, RunConfig, last_throughput, pick_tasks, record_throughput,
                   resolve_methods, task_sizes)
from .provenance import LOCK, git_commit, hardware, lock_mismatches, versions
from .report import add_uncertainty, normalization, results_table
from .scores import normalized_or_none
from .prepared import Prepared, with_protocol
from .tune import search_plan, tune

__all__ = ["DEFAULT_METHODS", "PROTOCOL", "Prepared", "RunConfig", "pick_tasks", "resolve_methods", "results_table",
           "run_benchmark", "dry_run", "with_protocol"]


def dry_run(cfg: RunConfig, *, backbone: Backbone | None = None) -> dict[str, Any]:
    """Print what ``run_benchmark(cfg)`` would do and return it as a dict; loads no model, evaluates nothing."""
    bb = backbone or get_backbone(cfg.backbone)
    prep = Prepared(cfg, bb, dry=True)
    if prep.missing:
        refuse_missing(prep)
    pending = prep.pending()
    total = sum(len(j.tasks) for j in prep.jobs)
    todo = sum(len(ts) for ts in pending.values())
    items = sum(prep.infos[t].n for ts in pending.values() for t in ts)
    rate = last_throughput(bb, prep.runtime)
    if prep.planned_base is not None and not prep.planned_base.ready:
        base_where = f"built locally on the first run: {prep.planned_base.path}"
    else:
        base_where = f"built locally: {prep.base_dir}" if bb.local_base else str(prep.base_dir or "download")
    plan = {
        "backbone": bb.name, "tasks": prep.tasks, "runtime": asdict(prep.runtime),
        "methods": {m.key: m.config for m in prep.methods},
        "base": {"id": bb.base_id, "where": base_where},
        "adapters": {t: {"id": bb.adapters[t].id, "kind": bb.adapters[t].kind,
                         "where": str(prep.adapter_dirs[t] or "download")}
                     for t in prep.tasks},
        "evaluations": {"total": total, "cached": total - todo, "to_run": todo, "items": items},
    }
    lines = [prep.header()]
    if prep.runtime.notice:
        lines.append(f"note: {prep.runtime.notice}")
    lines.append("methods: " + "; ".join(f"{k} {v}" if v else k for k, v in plan["methods"].items()))
    lines.append(f"base {bb.base_id}: {base_where}")
    lines += [f"adapter {t} ({a['kind']}) {a['id']}: {a['where']}" for t, a in plan["adapters"].items()]
    lines.append(f"evaluations: {total} ({total - todo} cached, {todo} to run, {items} items)")
    lines += task_sizes(bb, prep.infos, prep.manager, cfg.limit, plan)
    lines.append(f"executor: {cfg.executor.describe()}")
    lines += plan_costs([prep], plan, rate)
    print("\n".join(lines))
    return plan


def warn_unlocked(found: dict[str, str | None]) -> None:
    """One warning when the evaluation stack differs from merge-bench's lock: scores may then differ from the
    leaderboard's (the cache keeps them apart, the record names the versions)."""
    drift = lock_mismatches(found)
    if drift:
        print(f"warning: this evaluation stack differs from merge-bench's lock ({LOCK.name}): {'; '.join(drift)}; "
              f"scores may differ from the leaderboard's (install with pip -c {LOCK.name})", file=sys.stderr)


def refuse_missing(prep: Prepared) -> None:
    """A dry run's end when a run would not find its inputs: every missing one, then one error."""
    print(prep.header())
    print("\n".join(f"missing: {m}" for m in prep.missing))
    raise FileNotFoundError(f"{len(prep.missing)} input(s) a run needs are missing (listed above); expected each "
                            "at the path named")


def plan_costs(preps: list[Prepared], plan: dict[str, Any], rate: float | None) -> list[str]:
    """The dry run's cost lines, also added to ``plan``: the tuned track's validation search (an upper bound),
    the base's memory and disk footprint, and the time of everything at this machine's last rate."""
    from .estimate import footprint

    prep, lines = preps[0], []
    items = plan["evaluations"]["items"]
    if prep.cfg.track == "tuned":
        search = search_plan(preps)
        plan["tuning"] = search
        items += search["items"]
        lines.append(f"tuned track: at most {search['evaluations']} validation evaluations first ({search['items']} "
                     f"items): each task's LoRA on its validation variant, and per method and task set at most "
                     f"{search['budget']} merge-evaluations on its tasks' validation variants")
    size = footprint(prep.bb.base_id, prep.base_dir, prep.planned_base, prep.runtime.dtype)
    plan["footprint"] = {k: v for k, v in size.items() if k != "lines"}
    lines += size["lines"]
    plan["estimate_s"] = round(items / rate) if rate else None
    lines.append("estimated time: " + (f"about {plan['estimate_s'] / 60:.1f} min at {rate:g} items/s (this "
                                       "machine's last run)" if rate else
                                       "unknown (no run of this backbone, backend and device on this machine yet)"))
    return lines


def run_benchmark(cfg: RunConfig, *, backbone: Backbone | None = None, progress: bool = True) -> dict:
    """Run the protocol and return the run record (also written under ``cfg.out``)."""
    check_out_dir(cfg.out)  # before the first evaluation, not after the last
    bb = backbone or get_backbone(cfg.backbone)
    prep = Prepared(cfg, bb)
    print(prep.header(), file=sys.stderr)
    if prep.runtime.notice:
        print(f"note: {prep.runtime.notice}", file=sys.stderr)
    warn_unlocked(prep.versions)
    executor = prep.executor()
    try:
        if cfg.track == "tuned":
            tune([prep], executor, progress)
        _evaluate([prep], executor, progress)
    finally:
        executor.close()
    record = _record(prep, executor.describe())
    path = Path(cfg.out) / f"{bb.name}-{content_hash(prep.tasks)[:8]}-{record['created'].replace(':', '')}.json"
    print(results_table(record, bb.reported_for(prep.tasks)))
    path = save_record(path, record, samples.collect([prep], [""]))
    problems = record["normalization"]
    if problems["undefined"] or problems["unstable"]:
        print(f"warning: {problems['note']}", file=sys.stderr)
    print(f"run record: {path}", file=sys.stderr)
    return record


def _evaluate(preps: list[Prepared], executor: Executor, progress: bool) -> None:
    """Every pending (variant, task) of the runs in ``preps`` (one backbone and runtime), each evaluated once
    even where several task draws share it (their pretrained and LoRA rows), each cached as soon as it is done.
    One executor, one progress bar."""
    seen: set[str] = set()
    works: list[Work] = []
    for prep in preps:
        pending = prep.pending()
        for job in prep.jobs:
            tasks = [t for t in pending[job.name] if content_hash(prep.key(job.variant, t)) not in seen]
            seen.update(content_hash(prep.key(job.variant, t)) for t in tasks)
            if tasks:
                works.append(prep.work(job, tasks))
    total = sum(len(w.tasks) for w in works)
    bar = tqdm(total=total, desc="evaluating", unit="task", disable=not progress or total == 0)
    stats = executor.run(works, bar.update)
    bar.close()
    items, seconds = sum(n for n, _ in stats), sum(t for _, t in stats)
    if items and seconds > 0:
        record_throughput(preps[0].bb, preps[0].runtime, items / seconds)


def _record(prep: Prepared, executor: dict) -> dict[str, Any]:
    bb, cfg, tasks = prep.bb, prep.cfg, prep.tasks

    def row(job: Job) -> dict[str, dict]:
        return {t: prep.cache.get(prep.key(job.variant, t)) for t in job.tasks}

    reference, lora_jobs, merged_jobs = prep.jobs[0], prep.jobs[1:1 + len(tasks)], prep.jobs[1 + len(tasks):]
    lora = {job.tasks[0]: row(job)[job.tasks[0]]["score"] for job in lora_jobs}
    pretrained_rows = row(reference)
    pretrained = {t: r["score"] for t, r in pretrained_rows.items()}
    record: dict[str, Any] = {
        "record_version": 1,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merge_bench": {"version": __version__, "git_commit": git_commit()},
        "versions": prep.versions,
        "hardware": hardware(prep.runtime.device),
        "config": {**{k: v for k, v in asdict(cfg).items()
                      if k not in ("out", "n_tasks", "sizes", "draws", "save_merged", "cache_dir", "verbose",
                                   "dtype", "executor")},
                   "backbone": bb.name, "tasks": tasks, "methods": [m.spec for m in prep.methods],
                   "backend": prep.runtime.backend, "device": prep.runtime.device},
        "runtime": asdict(prep.runtime),
        "executor": executor,
        "backbone": {"name": bb.name, "base_id": bb.base_id, "base_revision": bb.base_revision,
                     "base_sha256": prep.base_sha},
        "adapters": {t: {"id": bb.adapters[t].id, "revision": bb.adapters[t].revision,
                         "sha256": prep.adapter_sha[t]} for t in tasks},
        "tasks": {t: {**prep.infos[t].to_dict(), "metric": pretrained_rows[t]["metric"]} for t in tasks},
        "normalization": normalization(lora, pretrained),
        "pretrained": {"scores": pretrained, "normalized": normalized_or_none(pretrained, lora)},
        "lora": {"scores": lora},
        "methods": {},
        "per_item": {"pretrained": {t: r["per_item"] for t, r in pretrained_rows.items()},
                     "lora": {job.tasks[0]: row(job)[job.tasks[0]]["per_item"] for job in lora_jobs}, "methods": {}},
    }
    for job in merged_jobs:
        m: MethodRun = job.method
        results = row(job)
        scores = {t: r["score"] for t, r in results.items()}
        record["methods"][m.key] = {"method": m.name, "params": m.config, "data": m.data, "scores": scores,
                                    "normalized": normalized_or_none(scores, lora),
                                    "merged_sha256": results[tasks[0]].get("merged_sha256"),
                                    "merge_code_sha256": m.code}
        record["per_item"]["methods"][m.key] = {t: r["per_item"] for t, r in results.items()}
    if prep.tuning is not None:
        record["tuning"] = prep.tuning
    add_uncertainty(record)
    record["record_sha256"] = content_hash(record)
    return record
