"""``--executor ray``: a run's works fanned out over Ray actors, each holding one evaluator (one loaded base).

The driver attaches to a running cluster (``--address auto|HOST:PORT``, or ``$RAY_ADDRESS`` as set by ``ray
start``) or starts a local one sized for ``--workers``. On a GPU run each actor takes one GPU (``num_gpus=1``;
Ray sets its CUDA_VISIBLE_DEVICES); on a CPU run each takes an equal share of the CPUs and sets torch's
threads to it. Actors pull batches as they free up (a merged variant's batch holds all of its tasks, so it
is merged once, where it is evaluated) and write every finished (variant, task) into the shared result cache
(``$MERGE_BENCH_CACHE``: a filesystem every node sees; one JSON per hash, atomic renames). A batch that
raises, or whose actor dies, goes back to the queue (a dead actor is replaced) without its cached tasks, at
most ``max_retries`` times. Ray's usage statistics are off.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import replace
from pathlib import Path

from .executor import Progress, Stats, batches
from .worker import EvaluatorSpec, Work, Worker

INSTALL = "pip install 'merge-bench[ray]'"
# Environment a worker on another node needs to see what the driver sees (offline hubs, caches, vLLM).
FORWARDED_ENV = ("HF_", "TRANSFORMERS_", "MERGE_BENCH_", "VLLM_", "TOKENIZERS_")


def import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read when ray starts a cluster
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


class _Actor:
    """A Ray actor around one ``Worker``: the evaluator (the loaded base) lives as long as the actor."""

    def __init__(self, spec: EvaluatorSpec, cache_root: Path, threads: int | None) -> None:
        self.worker = Worker(spec, cache_root, threads)

    def run(self, works: list[Work]) -> list[Stats]:
        return self.worker.run(works)


class RayExecutor:
    """Started on the first run with work to do, so a run that is all cached starts no cluster."""

    def __init__(self, spec: EvaluatorSpec, cache_root: Path, *, address: str | None = None,
                 workers: int | None = None, max_retries: int = 2) -> None:
        self.ray = import_ray()
        self.spec, self.cache_root, self.max_retries = spec, Path(cache_root), max_retries
        self.address, self.workers = address or os.environ.get("RAY_ADDRESS"), workers
        self.threads: int | None = None
        self.actors: list = []
        self.started = False  # whether this executor started the cluster (and shuts it down)

    def _start(self) -> None:
        ray, spec = self.ray, self.spec
        gpu = spec.runtime.device.startswith("cuda")
        quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        if not ray.is_initialized():
            self.started = True
            if self.address:
                env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
                ray.init(address=self.address, runtime_env={"env_vars": {**env, "RAY_USAGE_STATS_ENABLED": "0"}},
                         **quiet)
            else:
                ray.init(**self._local_resources(gpu, self.workers), **quiet)
        total = ray.cluster_resources()
        have = int(total.get("GPU" if gpu else "CPU", 0))
        if have < 1:
            raise ValueError(f"the Ray cluster has no {'GPU' if gpu else 'CPU'} for a {spec.runtime.device} run "
                             f"(its resources: {total})")
        self.workers = self.workers or have
        self.threads = None if gpu else max(1, have // self.workers)
        if gpu:  # an actor sees only its own GPU, as device "cuda"
            self.spec = replace(spec, runtime=replace(spec.runtime, device="cuda"))
        self._actor_class = ray.remote(_Actor).options(num_cpus=1 if gpu else self.threads,
                                                       num_gpus=1 if gpu else 0, max_restarts=0)
        self.actors = [self._new_actor() for _ in range(self.workers)]

    @staticmethod
    def _local_resources(gpu: bool, workers: int | None) -> dict:
        """A local cluster: every CPU and GPU of this machine, or as many CPUs as the workers take."""
        cpus = os.cpu_count() or 1
        if gpu:
            import torch

            return {"num_cpus": cpus, "num_gpus": torch.cuda.device_count()}
        return {"num_cpus": max(cpus, workers or 1)}

    def _new_actor(self):
        return self._actor_class.remote(self.spec, self.cache_root, self.threads)

    def describe(self) -> dict:
        return {"name": "ray", "workers": self.workers, "address": self.address or "local",
                "threads_per_worker": self.threads, "max_retries": self.max_retries}

    def run(self, works: list[Work], progress: Progress) -> list[Stats]:
        out: list[Stats] = [(0, 0.0)] * len(works)
        if not works:
            return out
        works = list(works)  # a retried batch's works shrink to what they did not cache
        if not self.actors:
            self._start()
        ray = self.ray
        queue = deque((b, 0) for b in batches(works, self.spec.runtime.backend))
        idle, running = list(self.actors), {}
        failed: BaseException | None = None  # past its retries: the batches running finish, then it is raised
        while running or (queue and failed is None):
            while idle and queue and failed is None:
                actor = idle.pop()
                batch, failures = queue.popleft()
                running[actor.run.remote([works[i] for i in batch])] = (actor, batch, failures)
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, batch, failures = running.pop(ref)
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayActorError:
                self.actors.remove(actor)  # lost mid-batch: the batch goes to another actor, a new one replaces it
                actor = self._new_actor()
                self.actors.append(actor)
                failed = failed or self._again(queue, works, batch, failures, progress, "its worker was lost")
            except ray.exceptions.RayTaskError as err:
                failed = failed or self._again(queue, works, batch, failures, progress, err)
            else:
                for i, st in zip(batch, stats):
                    out[i] = st
                progress(sum(len(works[i].tasks) for i in batch))
            idle.append(actor)
        if failed is not None:
            raise failed
        return out

    def _again(self, queue: deque, works: list[Work], batch: list[int], failures: int, progress: Progress,
               why) -> BaseException | None:
        """Queue a failed batch again, less what it cached before failing (counted as done); past its retries,
        the error to fail the run with: the worker's own exception (Ray's error type derives from its type)."""
        from .cache import ResultCache

        if failures >= self.max_retries:
            if isinstance(why, BaseException):
                return why
            names = ", ".join(works[i].name for i in batch)
            return RuntimeError(f"{names}: failed {failures + 1} times on Ray workers ({why})")
        cache = ResultCache(self.cache_root)
        for i in batch:
            w = works[i]
            todo = [j for j, k in enumerate(w.keys) if cache.get(k) is None]
            progress(len(w.tasks) - len(todo))
            works[i] = replace(w, tasks=tuple(w.tasks[j] for j in todo), keys=tuple(w.keys[j] for j in todo))
        rest = [i for i in batch if works[i].tasks]
        if rest:
            queue.appendleft((rest, failures + 1))
        return None

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started:
            self.ray.shutdown()
