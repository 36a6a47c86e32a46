"""The tuned track's search (protocol v2, "Tracks"): the same validation budget for every method.

For each (method, task draw): a coordinate search over the method's grid (``MergeMethod.search_grid``),
coordinates in their fixed order, each coordinate's values in grid order, starting from the default. The
objective is the mean normalized *validation* score, 100 · merged_val(t) / LoRA_val(t) over the draw's tasks.
At most ``BUDGET`` merge-evaluations (the default's included); a coordinate stops after ``PATIENCE``
consecutive values that do not improve on the best so far, and the search moves on to the next one.
A value only replaces the best when it scores strictly higher, so ties go to the earlier configuration and
ultimately to the default. The chosen values then get one test evaluation, like any other run.

Decisions where the spec is silent: the patience counts per coordinate (a global stop would leave the
second coordinate of every two-coordinate grid unvisited, the first coordinate's early grid values being
the small ones); a coordinate's default is not tried again when the search reaches it (it is the current
best's value there, already evaluated); an undefined objective (a LoRA scoring 0 on a validation task)
is an error before any merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .run import Prepared

BUDGET = 8    # merge-evaluations per (method, task draw), the default's included
PATIENCE = 2  # consecutive non-improvements that end a coordinate


@dataclass
class Search:
    """What a search tried, in order, and what it chose."""

    start: dict[str, Any]
    tried: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    budget: int = BUDGET

    @property
    def chosen(self) -> dict[str, Any]:
        best = self.tried[0]
        for config, score in self.tried[1:]:
            if score > best[1]:
                best = (config, score)
        return dict(best[0])

    @property
    def score(self) -> float:
        return max(score for _, score in self.tried)

    @property
    def evaluations(self) -> int:
        return len(self.tried)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "evaluations": self.evaluations, "budget": self.budget,
                "validation_score": round(self.score, 4),
                "path": [{"params": dict(c), "validation_score": round(s, 4)} for c, s in self.tried]}


def coordinate_search(grid: list[tuple[str, tuple]], start: dict[str, Any],
                      objective: Callable[[dict[str, Any]], float], *, budget: int = BUDGET,
                      patience: int = PATIENCE) -> Search:
    """Search ``grid`` (``[(param, values), ...]``) from ``start`` (the full config), calling ``objective``
    once per tried config, at most ``budget`` times; see the module docstring for the rules."""
    if budget < 1:
        raise ValueError(f"the search budget must be at least 1 evaluation, got {budget}")
    search = Search(dict(start), budget=budget)
    best, best_score = dict(start), objective(dict(start))
    search.tried.append((dict(start), best_score))
    for name, values in grid:
        misses = 0
        for value in values:
            if len(search.tried) >= budget:
                return search
            if value == best[name]:
                continue
            config = {**best, name: value}
            score = objective(dict(config))
            search.tried.append((config, score))
            if score > best_score:
                best, best_score, misses = config, score, 0
            else:
                misses += 1
                if misses >= patience:
                    break
    return search


# ---- the tuned track in a run: every (method, draw) searched on validation, then tested at its choice ----

def _budget_upper(grid: list[tuple[str, tuple]], budget: int) -> int:
    return min(budget, 1 + sum(len(values) - 1 for _, values in grid))


def tune(preps: list["Prepared"], progress: bool = True, evaluator=None):
    """Search every method of every prepared run (one per task draw) on the validation variants of its
    tasks; each run's methods become the chosen configs (keys unchanged) and ``prep.tuning`` holds the
    searches. Every validation evaluation goes through the result cache, so a rerun replays the searches
    without evaluating. Returns the evaluator (None if everything was cached) for the test evaluations."""
    import time
    from dataclasses import replace

    from tqdm import tqdm

    from ..evaluation.harness import describe_tasks
    from ..evaluation.tasks import VALIDATION_SUFFIX
    from ..merging.methods import get_method
    from .scores import normalized_or_none
    from .variants import evaluate_job, make_evaluator

    grids = {(i, m.key): get_method(m.spec).search_grid(m.config) for i, p in enumerate(preps) for m in p.methods}
    total = sum(len(p.tasks) * (1 + sum(_budget_upper(grids[i, m.key], BUDGET) for m in p.methods))
                for i, p in enumerate(preps))
    bar = tqdm(total=total, desc="tuning", unit="task", disable=not progress)
    holder = {"ev": evaluator}

    def scores(prep, job, tasks: list[str]) -> dict[str, float]:
        """``job`` on the validation variants of ``tasks``, evaluating what is not cached."""
        val = {t: f"{t}{VALIDATION_SUFFIX}" for t in tasks}
        missing = [v for v in val.values() if not prep.cached(job, v)]
        if missing:
            holder["ev"] = holder["ev"] or make_evaluator(prep)
            evaluate_job(prep, holder["ev"], job, missing)
        bar.update(len(tasks))
        return {t: prep.cache.get(prep.key(job.variant, v))["score"] for t, v in val.items()}

    wanted = sorted({f"{t}{VALIDATION_SUFFIX}" for p in preps for t in p.tasks})
    described = describe_tasks(preps[0].bb, wanted, preps[0].manager, preps[0].cfg.limit) if preps else {}
    for i, prep in enumerate(preps):
        prep.infos.update({f"{t}{VALIDATION_SUFFIX}": described[f"{t}{VALIDATION_SUFFIX}"] for t in prep.tasks})
        lora_val = {}
        for job in prep.jobs[1:1 + len(prep.tasks)]:  # each task's LoRA on its own validation variant
            lora_val.update(scores(prep, job, job.tasks))
        bad = sorted(t for t, s in lora_val.items() if s <= 0)
        if bad:
            raise ValueError(f"tuned track: the LoRA scores 0 on the validation variant of {bad}, so the "
                             "objective (merged_val / LoRA_val) is undefined there")
        chosen, prep.tuning = [], {}
        for m in prep.methods:
            def objective(config, m=m):
                bar.set_postfix_str(f"{m.key} {config}" if len(preps) == 1 else f"{m.key} on {','.join(prep.tasks)}")
                job = prep.make_jobs([replace(m, config=config)])[-1]
                return normalized_or_none(scores(prep, job, prep.tasks), lora_val)

            start = time.perf_counter()
            search = coordinate_search(grids[i, m.key], m.config, objective)
            prep.tuning[m.key] = {**search.to_dict(), "seconds": round(time.perf_counter() - start, 2)}
            bar.total -= len(prep.tasks) * (_budget_upper(grids[i, m.key], BUDGET) - search.evaluations)
            chosen.append(replace(m, config=search.chosen))
        prep.methods = chosen
        prep.jobs = prep.make_jobs(chosen)
    bar.close()
    return holder["ev"]

