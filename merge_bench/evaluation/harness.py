"""The glue to lm-evaluation-harness that every backend shares: task descriptions (what identifies a
task's evaluation) and one ``simple_evaluate`` call that returns each task's primary metric."""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator
from unittest import mock

from ..backbones import Backbone
from .quiet import quiet

@dataclass(frozen=True)
class TaskInfo:
    """What identifies a task's evaluation: its lm-eval name, version and the exact documents."""

    short: str
    lm_eval_task: str
    version: str
    n: int
    sample_ids_sha256: str
    # The task as evaluated, by content only (``task_sha256``): its config after includes, the documents
    # scored and the source of its hooks; never where the YAML or the checkout lives.
    yaml_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskScore:
    metric: str
    score: float  # 0–100
    n: int
    # One value per scored item, in the order of the sampled ids: 0/1 (acc), token F1 (f1), or the
    # (prediction, gold) pair (spearman). Protocol v2's bootstrap resamples these.
    per_item: list = field(default_factory=list)
    # What the model wrote, item by item in the same order (lm-eval's --log_samples): the sampled id, lm-eval's
    # prompt hash (sha256 of the prompt text), the generated text, the text the answer was read from (after
    # the task's filter) and the item's score.
    samples: list = field(default_factory=list)


def sample_ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _stable_text(value) -> str:
    """JSON text for what ``to_dict(keep_callable=False)`` leaves as an object: a callable nested in the config
    (lm-eval copies ``process_docs`` into ``fewshot_config``) by its name and source, not its ``repr``, whose
    memory address would give every process another task hash and so miss every cached result."""
    if callable(value):
        import inspect

        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}:{digest}"
    return str(value)


def describe_tasks(backbone: Backbone, shorts: list[str], manager, limit: int | None) -> dict[str, TaskInfo]:
    """Build each task once (lm-eval loads and samples its documents) and hash what will be scored."""
    names = {backbone.lm_eval_task(s): s for s in shorts}
    unknown = sorted(n for n in names if n not in manager.all_tasks)
    if unknown:
        raise ValueError(f"no lm-eval task named {unknown} under {manager.include_path}")
    infos = {}
    with quiet():
        loaded = manager.load(list(names))["tasks"]
    for name, task in loaded.items():
        docs = list(task.eval_docs)
        if limit is not None:
            docs = docs[:limit]
        missing = [i for i, d in enumerate(docs) if "mb_id" not in d]
        if missing:
            raise ValueError(f"task {name}: documents {missing[:5]} have no 'mb_id' field (set in process_docs)")
        config = task.config
        version = (config.metadata or {}).get("version", "unversioned")
        infos[names[name]] = TaskInfo(
            short=names[name], lm_eval_task=name, version=str(version), n=len(docs),
            sample_ids_sha256=sample_ids_sha256([str(d["mb_id"]) for d in docs]),
            yaml_sha256=task_sha256(config, docs),
        )
    return infos


def task_sha256(config, docs: list[dict]) -> str:
    """A task's identity by content, the same from any checkout, wheel install or machine: its lm-eval config
    after includes (without ``metadata.config_source``, the YAML's absolute path, and with any other absolute
    file path replaced by that file's hash), the documents it scores, and the source files of its hooks
    (``!function`` callables: a change to the scoring or loading code evaluates again)."""
    content = _without_paths(config.to_dict(keep_callable=False))
    hooks: dict[str, str] = {}
    _hook_sources(vars(config), hooks)
    text = json.dumps({"config": content, "docs": hashlib.sha256(json.dumps(docs, sort_keys=True, default=str)
                                                                  .encode()).hexdigest(),
                       "hooks": dict(sorted(hooks.items()))}, sort_keys=True, default=_stable_text)
    return hashlib.sha256(text.encode()).hexdigest()


def _without_paths(value, key: str = ""):
    if isinstance(value, dict):
        return {k: _without_paths(v, k) for k, v in value.items() if k != "config_source"}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value and Path(value).is_file():
        return "sha256:" + hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return value


def _hook_sources(value, out: dict[str, str]) -> None:
    """``out[file name:qualified name] = sha256 of the file`` for every callable in a task config."""
    import inspect

    if isinstance(value, dict):
        for v in value.values():
            _hook_sources(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _hook_sources(v, out)
    elif callable(value) and not isinstance(value, type):
        try:
            source = inspect.getsourcefile(value)
        except TypeError:  # a builtin
            return
        if source and Path(source).is_file():
            name = f"{Path(source).name}:{getattr(value, '__qualname__', type(value).__name__)}"
            out[name] = hashlib.sha256(Path(source).read_bytes()).hexdigest()


def _primary_metric(task_results: dict, task: str) -> tuple[str, float]:
    metrics = {k.split(",")[0]: v for k, v in task_results.items()
               if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    if len(metrics) != 1:
        raise ValueError(f"task {task}: expected exactly one metric, lm-eval reported {sorted(metrics)}")
    (name, value), = metrics.items()
    return name, float(value)


def run_lm_eval(lm, backbone: Backbone, shorts: list[str], manager, limit: int | None,
                seed: int, verbose: bool = False) -> dict[str, TaskScore]:
    """One ``simple_evaluate`` call on an lm-eval LM; each task's primary metric on the 0–100 scale."""
    from lm_eval import simple_evaluate

    names = [backbone.lm_eval_task(s) for s in shorts]
    with quiet(verbose), _no_environment_probes():
        out = simple_evaluate(
            model=lm, tasks=names, task_manager=manager, limit=limit, apply_chat_template=backbone.chat_template,
            log_samples=True, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, verbosity="ERROR",
        )
    scores = {}
    for short, name in zip(shorts, names):
        metric, value = _primary_metric(out["results"][name], name)
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        per_item = [list(s[metric]) if isinstance(s[metric], (tuple, list)) else float(s[metric]) for s in samples]
        scores[short] = TaskScore(metric, 100.0 * value, int(out["n-samples"][name]["effective"]), per_item,
                                  [_sample(s, score) for s, score in zip(samples, per_item)])
    return scores


def _sample(s: dict, score) -> dict:
    def first(x):
        while isinstance(x, (list, tuple)) and x:
            x = x[0]
        return x if isinstance(x, str) else str(x)

    return {"id": str((s.get("doc") or {}).get("mb_id", s["doc_id"])), "prompt_sha256": s.get("prompt_hash"),
            "response": first(s.get("resps")), "filtered": first(s.get("filtered_resps")), "score": score}


@contextmanager
def _no_environment_probes() -> Iterator[None]:
    """simple_evaluate records its environment into results we discard (our run record has its own
    versions and hardware): ``add_env_info`` runs torch's collect_env, about 1.1 s of subprocesses per
    call (88 % of an evaluation on a rehearsal mirror), and ``get_git_commit_hash`` runs ``git describe``,
    which prints "fatal: not a git repository" outside a checkout."""
    with mock.patch("lm_eval.evaluator.add_env_info"), \
            mock.patch("lm_eval.evaluator.get_git_commit_hash", return_value=None):
        yield
