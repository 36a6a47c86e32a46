"""``merge-bench run``: pick tasks, evaluate pretrained / LoRA / every merge, score, record.

The pipeline is a list of evaluation jobs (model variant × task, ``plan.build_jobs``). Each finished job
is cached by content hash (``cache.ResultCache``), so a rerun or an extended run evaluates only what is
new. Merges happen in memory and are swapped into the one loaded base model. A run that finished its
evaluations always prints its table and writes its record, even where a normalized score is undefined.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..backbones import Backbone, get_backbone, locate, resolve
from ..io.files import cache_root, content_hash, dir_sha256, prompts_sha256
from .cache import ResultCache
from .executor import Executor, SequentialExecutor
from .outputs import check_out_dir, save_record
from .plan import (DEFAULT_METHODS, PROTOCOL, PROTOCOLS, TRACKS, Job, MethodRun, RunConfig, build_jobs, last_throughput,
                   pick_tasks, record_throughput, resolve_methods, resolve_runtime, task_sizes)
from .provenance import LOCK, git_commit, hardware, lock_mismatches, versions
from .report import add_uncertainty, normalization, results_table
from .scores import normalized_or_none
from .tune import search_plan, tune
from .worker import EvaluatorSpec, MergeInput, Work

__all__ = ["DEFAULT_METHODS", "PROTOCOL", "RunConfig", "pick_tasks", "resolve_methods", "results_table",
           "run_benchmark", "dry_run"]


class Prepared:
    """A run's inputs resolved and hashed, its tasks described, its jobs and cache keys known."""

    def __init__(self, cfg: RunConfig, bb: Backbone, *, dry: bool = False, methods: list[MethodRun] | None = None,
                 like: "Prepared | None" = None) -> None:
        """``methods`` replaces those of ``cfg`` (a sweep's per-draw seeds); ``like``, a Prepared of the same
        backbone and runtime over a superset of the tasks, lends its hashes and task descriptions."""
        if cfg.track not in TRACKS:
            raise ValueError(f"unknown track {cfg.track!r}; expected one of {', '.join(TRACKS)}")
        bb = with_protocol(bb, cfg)
        self.cfg, self.bb = cfg, bb
        self.tasks = pick_tasks(bb, cfg.n_tasks, cfg.tasks, cfg.seed)
        if bb.protocol == "reference":
            from ..evaluation.reference import has_reference

            missing = [t for t in self.tasks if not has_reference(bb.suite, t)]
            if missing:
                raise ValueError(f"--protocol reference: the STAR reference does not evaluate {bb.name}'s task(s) "
                                 f"{', '.join(missing)}; expected tasks it evaluates (e.g. --tasks paper)")
        self.tuning: dict[str, dict] | None = None  # the tuned track's searches, by method key (tune.py)
        self.methods = methods if methods is not None else resolve_methods(cfg.methods, cfg.params)
        if like is not None:
            self._borrow(like)
            return
        self.runtime = resolve_runtime(cfg.backend, cfg.device, cfg.dtype, bb)
        # A dry run downloads and builds nothing: what is not local is "download" (None), its evaluations all
        # to run; a locally built base that is not built yet is planned (``planned_base``); and whatever a run
        # would not find is listed in ``missing``, every one of them, not only the first.
        self.missing: list[str] = []
        self.planned_base = None
        if dry:
            planned = getattr(bb.local_base, "planned", None)
            self.planned_base = planned() if planned is not None else None
            if bb.local_base is None:
                self.base_dir = self._locate(bb.base_id, "base")
            else:
                self.base_dir = bb.local_base() if self.planned_base is None or self.planned_base.ready else None
            self.adapter_dirs = {t: self._locate(bb.adapters[t].id, bb.adapters[t].kind) for t in self.tasks}
        else:
            self.base_dir = bb.local_base() if bb.local_base else resolve(bb.base_id, bb.base_revision, "base")
            self.adapter_dirs = {t: resolve(bb.adapters[t].id, bb.adapters[t].revision, bb.adapters[t].kind)
                                 for t in self.tasks}
        self.base_sha = dir_sha256(self.base_dir) if self.base_dir else None
        self.adapter_sha = {t: dir_sha256(d) if d else None for t, d in self.adapter_dirs.items()}

        from ..evaluation.tasks import task_manager

        self.manager = task_manager(bb.task_dirs)
        self.infos = self._describe(self.tasks, dry)
        self.cache = ResultCache(cfg.cache_dir or cache_root() / "results")
        # The evaluation stack is part of a result's identity: an upgrade of any of these, or another batch
        # size (padding changes the numerics), evaluates again instead of reading back a stale score.
        self.versions = versions()
        self.stack = {k: v for k, v in self.versions.items() if k in ("torch", "transformers", "peft", "lm_eval")
                      or (k == "vllm" and self.runtime.backend == "vllm")}
        self.calibration: dict[str, list[str]] = {}
        if any(m.data == "calibration" for m in self.methods) and self.base_dir is not None:
            self.calibration = calibration_prompts(bb, self.tasks, self.manager, self.base_dir)
        self.jobs = self.make_jobs(self.methods)

    def _locate(self, model_id: str, kind: str | None) -> Path | None:
        """A dry run's ``locate``: a model a run would not find is noted in ``missing`` (None)."""
        try:
            return locate(model_id, kind)
        except (FileNotFoundError, ValueError) as err:
            self.missing.append(str(err))
            return None

    def _describe(self, tasks: list[str], dry: bool) -> dict:
        """The tasks' descriptions; a dry run notes each task whose data cannot be read in ``missing``."""
        from ..evaluation.harness import describe_tasks

        try:
            return describe_tasks(self.bb, tasks, self.manager, self.cfg.limit)
        except (FileNotFoundError, ValueError):
            if not dry:
                raise
        infos = {}
        for t in tasks:  # one at a time, to name every task that fails
            try:
                infos.update(describe_tasks(self.bb, [t], self.manager, self.cfg.limit))
            except (FileNotFoundError, ValueError) as err:
                self.missing.append(f"task {t}: {err}")
        return infos

    def make_jobs(self, methods: list[MethodRun]) -> list[Job]:
        return build_jobs(self.tasks, methods, self.adapter_sha,
                          {t: prompts_sha256(p) for t, p in self.calibration.items()})

    def _borrow(self, like: "Prepared") -> None:
        for name in ("runtime", "base_dir", "base_sha", "manager", "cache", "versions", "stack", "missing",
                     "planned_base"):
            setattr(self, name, getattr(like, name))
        self.adapter_dirs = {t: like.adapter_dirs[t] for t in self.tasks}
        self.adapter_sha = {t: like.adapter_sha[t] for t in self.tasks}
        self.infos = {t: like.infos[t] for t in self.tasks if t in like.infos}  # a dry run may miss some
        self.calibration = {t: like.calibration[t] for t in self.tasks if t in like.calibration}
        self.jobs = self.make_jobs(self.methods)

    def key(self, variant: dict, task: str) -> dict:
        info, rt = self.infos[task], self.runtime
        key = {"protocol": PROTOCOL, "base": self.base_sha, "variant": variant, "backend": rt.backend,
               "task": info.lm_eval_task, "task_version": info.version, "task_config": info.yaml_sha256,
               "sample_ids": info.sample_ids_sha256, "limit": self.cfg.limit, "device_kind": rt.device.split(":")[0],
               "batch_size": self.cfg.batch_size or self.bb.eval.batch_size, "stack": self.stack}
        if rt.dtype != "float32":  # float32 keys stay those of earlier releases
            key["dtype"] = rt.dtype
        return key

    def pending(self) -> dict[str, list[str]]:
        def known(job: Job) -> bool:  # every input hashed (a dry run leaves downloads unhashed)
            hashes = [self.adapter_sha[t] for t in job.tasks] if job.variant["kind"] != "pretrained" else []
            return self.base_sha is not None and None not in hashes

        return {job.name: [t for t in job.tasks if not (known(job) and self.cached(job, t))] for job in self.jobs}

    def cached(self, job: Job, task: str) -> bool:
        """``job`` has a result on ``task`` (a result from before per-item scores is evaluated again)."""
        hit = self.cache.get(self.key(job.variant, task))
        return hit is not None and "per_item" in hit

    def work(self, job: Job, tasks: list[str]) -> Work:
        """``job`` on ``tasks`` (tasks or their validation variants) as plain data a worker anywhere can run."""
        keys = tuple(self.key(job.variant, t) for t in tasks)
        kind = job.variant["kind"]
        if kind == "lora":
            ref = self.bb.adapters[job.tasks[0]]
            return Work(job.name, tuple(tasks), keys, adapter=self.adapter_dirs[job.tasks[0]], adapter_kind=ref.kind,
                        adapter_targets=ref.targets)
        if kind == "pretrained":
            return Work(job.name, tuple(tasks), keys)
        m = job.method
        spec = m.spec
        if ".py:" in spec:  # a plugin file, found from wherever the worker runs
            path, _, cls = spec.rpartition(":")
            spec = f"{Path(path).resolve()}:{cls}"
        # Full checkpoints contribute their declared target matrices only (flan: q and v), as their LoRA row does.
        declared = sorted({t for task in self.tasks for t in (self.bb.adapters[task].targets or ())})
        merge = MergeInput(spec, dict(m.config), tuple(self.adapter_dirs[t] for t in self.tasks), self.base_dir,
                           tuple(declared) or None,
                           tuple(tuple(self.calibration[t]) for t in self.tasks) if m.data == "calibration" else None,
                           m.lowrank)
        save_to = Path(self.cfg.out) / "merged" / m.key if self.cfg.save_merged else None
        return Work(job.name, tuple(tasks), keys, merge=merge, save_to=save_to)

    def evaluator_spec(self) -> EvaluatorSpec:
        return EvaluatorSpec(replace(self.bb, local_base=None), self.base_dir, self.runtime, self.cfg.limit,
                             self.cfg.seed, self.cfg.batch_size, self.cfg.verbose)

    def executor(self) -> Executor:
        """The run's executor (``--executor``); every prepared run of one sweep shares it. Close it when done."""
        ex, spec = self.cfg.executor, self.evaluator_spec()
        if ex.name == "ray":
            from .ray_executor import RayExecutor

            return RayExecutor(spec, self.cache.root, address=ex.address, workers=ex.workers,
                               max_retries=ex.max_retries)
        return SequentialExecutor(spec, self.cache.root)

    def header(self) -> str:
        return (f"backbone {self.bb.name}: {len(self.tasks)} task(s) {', '.join(self.tasks)} (seed {self.cfg.seed}); "
                f"{self.runtime.describe()}")


def with_protocol(bb: Backbone, cfg: RunConfig) -> Backbone:
    """The backbone evaluated under ``cfg.protocol`` (its tasks' ``_ref`` variants under "reference")."""
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {cfg.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if cfg.protocol == "reference" and cfg.track != "default":
        raise ValueError("--protocol reference goes with --track default: the reference tunes nothing")
    return replace(bb, protocol=cfg.protocol)


def calibration_prompts(bb: Backbone, tasks: list[str], manager, base_dir: Path) -> dict[str, list[str]]:
    """Each task's calibration prompts (``evaluation.calibration``), for methods that merge with data."""
    from transformers import AutoTokenizer

    from ..evaluation.calibration import task_prompts

    tokenizer = AutoTokenizer.from_pretrained(base_dir) if bb.chat_template else None
    return {t: task_prompts(bb, t, manager, tokenizer) for t in tasks}


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
    path = save_record(path, record)
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
