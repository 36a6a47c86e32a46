"""A run's inputs resolved and hashed, its tasks described, its jobs and cache keys known (``Prepared``):
what ``run`` evaluates, ``tune`` searches and ``sweep`` shares between task draws. Kept apart from ``run`` so
that ``tune`` imports it without importing ``run`` (which imports ``tune``)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..backbones import Backbone, locate, resolve
from ..io.files import cache_root, dir_sha256, prompts_sha256
from .cache import ResultCache
from .executor import Executor, SequentialExecutor
from .plan import PROTOCOL, PROTOCOLS, TRACKS, Job, MethodRun, RunConfig, build_jobs, pick_tasks, resolve_methods, \
    resolve_runtime
from .provenance import versions
from .worker import EvaluatorSpec, MergeInput, Work


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
