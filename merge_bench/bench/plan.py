"""What a run will do, decided before any model is loaded: the task set, the methods with their
parameters, the backend, device and dtype, and the list of evaluation jobs.

``run.py`` executes a plan; ``--dry-run`` prints one (``describe``) and stops.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backbones import Backbone
from ..io.files import cache_root, write_json_atomic
from ..merging.methods import available_methods, get_method
from .provenance import merge_code_sha256

PROTOCOL = "v1"
# The default method set: the reference's methods plus the mean. `--methods all` runs every one.
DEFAULT_METHODS = ("simple_avg", "task_arithmetic", "ties", "tall_masks", "metagpt", "star", "drm")
TRACKS = ("default", "tuned")
# --protocol: ours (with the fixes of the leaderboard's protocol notes), or the STAR reference's items, inputs and
# scoring (evaluation/reference.py), only to reproduce the paper's table.
PROTOCOLS = ("default", "reference")
PAPER = "paper"  # `--tasks paper`: the task set the STAR README reports for the backbone


EXECUTORS = ("sequential", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the evaluations run (``executor.py``); not part of any result's identity."""

    name: str = "sequential"  # sequential | ray
    address: str | None = None  # ray: "auto" or HOST:PORT of a running cluster; None: $RAY_ADDRESS, else a local one
    workers: int | None = None  # ray: actors (default: the cluster's GPUs on a GPU run, else its CPUs)
    max_retries: int = 2  # ray: a batch that fails or loses its worker runs again this many times at most

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(f"unknown executor {self.name!r}; expected one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.name == "sequential" and (self.address is not None or self.workers is not None):
            raise ValueError("--address and --workers go with --executor ray")

    def describe(self) -> str:
        if self.name == "sequential":
            return "sequential (this process)"
        import os

        address = self.address or os.environ.get("RAY_ADDRESS")
        where = f"the cluster at {address}" if address else "a local cluster"
        return f"ray, {self.workers or 'default'} worker(s) ({where})"


@dataclass
class RunConfig:
    backbone: str = "tiny"
    n_tasks: int | None = None
    sizes: list[int] | None = None  # a sweep (protocol v2 task draws): these set sizes ...
    draws: int | str | None = None  # ... with this many draws each, or "all" subsets (sweep.py)
    tasks: list[str] | None = None  # names, or ["paper"]
    methods: list[str] | None = None  # names or "file.py:Class"; None = DEFAULT_METHODS; ["all"] = every one
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 42
    backend: str = "auto"  # auto | hf | vllm
    device: str = "auto"  # auto | cpu | cuda[:N]
    dtype: str | None = None  # None: the backbone's on a GPU, float32 on a CPU
    limit: int | None = None
    out: Path = Path("runs")
    save_merged: bool = False
    batch_size: int | None = None
    cache_dir: Path | None = None  # result cache; None = $MERGE_BENCH_CACHE/results (check passes a fresh one)
    verbose: bool = False  # keep the libraries' own bars and notices
    track: str = "default"  # "default": every method at its defaults; "tuned": the validation search (tune.py)
    protocol: str = "default"  # "default" | "reference" (PROTOCOLS)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


@dataclass(frozen=True)
class Runtime:
    """Where and how a run evaluates and merges, as resolved from ``auto``."""

    backend: str
    device: str
    dtype: str
    notice: str | None = None  # why the declared backend was not taken

    def describe(self) -> str:
        return f"backend {self.backend}, device {self.device}, dtype {self.dtype}"


def resolve_runtime(backend: str, device: str, dtype: str | None, bb: Backbone) -> Runtime:
    """``--device auto``: cuda when torch sees one, else cpu. ``--backend auto``: the backbone's declared
    backend when it can run here (vLLM installed and a GPU), else hf with a notice. dtype: the backbone's
    on a GPU, float32 on a CPU (bf16 matmuls on a CPU are slow and round differently); float32 always under
    ``--protocol reference`` (the reference loads every model in float32)."""
    import importlib.util

    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; expected auto, hf or vllm")
    if backend == "vllm" and bb.seq2seq:  # flan's truncation and decoding are tested on the hf backend only
        raise ValueError(f"--backend vllm: backbone {bb.name} is an encoder-decoder, which vLLM does not serve; "
                         "expected --backend hf (or auto)")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    notice = None
    if backend == "auto":
        backend = bb.eval.backend
        if backend == "vllm" and (device == "cpu" or importlib.util.find_spec("vllm") is None):
            why = "no GPU" if device == "cpu" else "vLLM is not installed (pip install 'merge-bench[vllm]')"
            backend, notice = "hf", f"backbone {bb.name} declares the vllm backend; using hf ({why})"
    if bb.protocol == "reference":
        if dtype not in (None, "float32"):
            raise ValueError(f"--dtype {dtype} with --protocol reference: the reference evaluates in float32; "
                             "leave --dtype out or give float32")
        dtype = "float32"
    if dtype is None:
        dtype = "float32" if device == "cpu" else bb.eval.dtype
    return Runtime(backend, device, dtype, notice)


def pick_tasks(backbone: Backbone, n_tasks: int | None, tasks: list[str] | None, seed: int) -> list[str]:
    """``tasks`` as named (``["paper"]``: the STAR paper's set), or ``n_tasks`` drawn with ``seed`` from the
    backbone's pickable tasks, or all of those."""
    if tasks and n_tasks is not None:
        raise ValueError("give --tasks or --n-tasks, not both")
    if tasks == [PAPER]:
        if not backbone.paper_tasks:
            raise ValueError(f"backbone {backbone.name} has no task set reported by the STAR paper")
        return list(backbone.paper_tasks)
    if tasks:
        unknown = [t for t in tasks if t not in backbone.adapters]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} for backbone {backbone.name}; valid tasks: "
                             f"{', '.join(backbone.tasks)}" + (", or 'paper'" if backbone.paper_tasks else ""))
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
    lowrank: bool = False  # its class computes LoRA inputs' merges in factor space
    data: str = "none"  # what it needs besides the adapters: "none" or "calibration" (RegMean's Grams)


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
        runs.append(MethodRun(key, cls.name, spec, config, merge_code_sha256(cls), bool(cls.lowrank), cls.data))
    stray = sorted(set(params) - {r.name for r in runs} - set(names))
    known = available_methods()
    unknown = [m for m in stray if m not in known]
    if unknown:
        raise ValueError(f"--param {unknown[0]}.{next(iter(params[unknown[0]]))}=...: there is no method "
                         f"{unknown[0]!r}; expected one of {', '.join(sorted(known))}")
    if stray:
        raise ValueError(f"--param given for method(s) {stray} that are not being run (add them to --methods)")
    return runs


@dataclass(frozen=True)
class Job:
    """One model variant and the tasks it is evaluated on."""

    name: str  # "pretrained", "lora:<task>", "merged:<method key>"
    variant: dict[str, Any]  # the variant's part of the cache key
    tasks: list[str]
    method: MethodRun | None = None


def build_jobs(tasks: list[str], methods: list[MethodRun], adapter_sha: dict[str, str],
               calibration_sha: dict[str, str] | None = None) -> list[Job]:
    """The run's jobs. A merge that reads calibration data has the hashes of each task's prompts in its key."""
    merged_inputs = [{"task": t, "sha256": adapter_sha[t]} for t in tasks]
    jobs = [Job("pretrained", {"kind": "pretrained"}, tasks)]
    jobs += [Job(f"lora:{t}", {"kind": "lora", "adapter": adapter_sha[t]}, [t]) for t in tasks]
    for m in methods:
        variant = {"kind": "merged", "method": m.name, "params": m.config, "inputs": merged_inputs, "code": m.code}
        if m.data == "calibration":
            variant["calibration"] = {t: (calibration_sha or {}).get(t) for t in tasks}
        jobs.append(Job(f"merged:{m.key}", variant, tasks, m))
    return jobs


# Items per second this machine last measured, per (backbone, backend, device kind): for --dry-run estimates.
def _throughput_file() -> Path:
    return cache_root() / "throughput.json"


def last_throughput(bb: Backbone, runtime: Runtime) -> float | None:
    try:
        return json.loads(_throughput_file().read_text()).get(_throughput_key(bb, runtime))
    except (OSError, ValueError):
        return None


def record_throughput(bb: Backbone, runtime: Runtime, items_per_s: float) -> None:
    try:
        known = json.loads(_throughput_file().read_text())
    except (OSError, ValueError):
        known = {}
    known[_throughput_key(bb, runtime)] = round(items_per_s, 3)
    write_json_atomic(_throughput_file(), known)


def _throughput_key(bb: Backbone, runtime: Runtime) -> str:
    return f"{bb.name}|{runtime.backend}|{runtime.device.split(':')[0]}"


def protocol_n(sample: str, n_labels: int) -> int | None:
    """How many items a task's sample spec asks for: k for "rand k", k per label for "bal k" (``n_labels``
    classes); None for "all", "bal all" and a balanced task whose classes are not declared (whatever the data holds)."""
    from ..evaluation.sampling import SampleSpec

    spec = SampleSpec.parse(sample)
    if spec.k is None or (spec.kind == "bal" and n_labels == 0):
        return None
    return spec.k * n_labels if spec.kind == "bal" else spec.k


def task_sizes(bb: Backbone, infos: dict, manager, limit: int | None, plan: dict[str, Any]) -> list[str]:
    """The dry run's per-task sizes: the protocol's n beside the items the data actually gives (``infos``: the
    described tasks), added to ``plan`` as ``task_sizes``; a warning names the tasks whose data holds fewer.
    A task without our ``dataset_kwargs.sample`` (a plain lm-eval YAML) has no protocol n."""
    sizes, short = {}, []
    for name, info in infos.items():
        cfg = manager.task_index[info.lm_eval_task].cfg or {}
        sample = (cfg.get("dataset_kwargs") or {}).get("sample")
        want = protocol_n(str(sample), len((cfg.get("metadata") or {}).get("labels") or [])) if sample else None
        sizes[name] = {"sample": sample, "protocol_n": want, "n": info.n}
        if want is not None and info.n < want and (limit is None or info.n < limit):
            short.append(f"{name} ({info.n} of {want})")
    plan["task_sizes"] = sizes
    cells = [f"{t} {s['sample']}: {'all' if s['protocol_n'] is None else s['protocol_n']} → {s['n']}"
             for t, s in sizes.items()]
    lines = ["items (protocol n → what the data gives" + (f", at most --limit {limit}" if limit else "") + "): "
             + "; ".join(cells)]
    if short:
        lines.append(f"warning: the data holds fewer items than the protocol asks for on {len(short)} task(s): "
                     f"{', '.join(short)}; their scores rest on fewer items (wider intervals)")
    return lines
