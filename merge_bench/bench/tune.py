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
from typing import Any, Callable, Generator

from .prepared import Prepared

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


def search_steps(grid: list[tuple[str, tuple]], start: dict[str, Any], *, budget: int = BUDGET,
                 patience: int = PATIENCE) -> Generator[dict[str, Any], float, Search]:
    """The search as a generator: it yields each config to try (the full config) and is sent its score; it
    returns the ``Search``. Searches of several (method, draw) pairs can so advance side by side, their
    evaluations going to an executor together. See the module docstring for the rules."""
    if budget < 1:
        raise ValueError(f"the search budget must be at least 1 evaluation, got {budget}")
    search = Search(dict(start), budget=budget)
    best = dict(start)
    best_score = yield dict(start)
    search.tried.append((dict(start), best_score))
    for name, values in grid:
        misses = 0
        for value in values:
            if len(search.tried) >= budget:
                return search
            if value == best[name]:
                continue
            config = {**best, name: value}
            score = yield dict(config)
            search.tried.append((config, score))
            if score > best_score:
                best, best_score, misses = config, score, 0
            else:
                misses += 1
                if misses >= patience:
                    break
    return search


def coordinate_search(grid: list[tuple[str, tuple]], start: dict[str, Any],
                      objective: Callable[[dict[str, Any]], float], *, budget: int = BUDGET,
                      patience: int = PATIENCE) -> Search:
    """Search ``grid`` (``[(param, values), ...]``) from ``start``, calling ``objective`` once per tried
    config, at most ``budget`` times."""
    steps = search_steps(grid, start, budget=budget, patience=patience)
    config = next(steps)
    while True:
        try:
            config = steps.send(objective(config))
        except StopIteration as done:
            return done.value


# ---- the tuned track in a run: every (method, draw) searched on validation, then tested at its choice ----

def _budget_upper(grid: list[tuple[str, tuple]], budget: int) -> int:
    return min(budget, 1 + sum(len(values) - 1 for _, values in grid))


def search_plan(preps: list[Prepared]) -> dict[str, int]:
    """What ``tune(preps, ...)`` evaluates at most, for a dry run: each task's LoRA on its validation variant
    once, and per (method, task set) at most min(BUDGET, the grid's size) merge-evaluations on the set's
    validation variants (a bound: a search stops early, and what is cached is not evaluated again)."""
    from ..evaluation.harness import describe_tasks
    from ..evaluation.tasks import VALIDATION_SUFFIX as val
    from ..merging.methods import get_method

    tasks = sorted({t for p in preps for t in p.tasks})
    n = {t: i.n for t, i in describe_tasks(preps[0].bb, [f"{t}{val}" for t in tasks], preps[0].manager,
                                           preps[0].cfg.limit).items()}
    evaluations, items = len(tasks), sum(n[f"{t}{val}"] for t in tasks)
    for prep in preps:
        for m in prep.methods:
            upper = _budget_upper(get_method(m.spec).search_grid(m.config), BUDGET)
            evaluations += upper * len(prep.tasks)
            items += upper * sum(n[f"{t}{val}"] for t in prep.tasks)
    return {"evaluations": evaluations, "items": items, "budget": BUDGET}


@dataclass
class _Running:
    """One (method, draw) search in a run, and the merge-evaluation it waits for."""

    prep: Prepared
    method: Any  # plan.MethodRun
    steps: Generator[dict[str, Any], float, Search]
    config: dict[str, Any]
    upper: int  # the most evaluations it can take (for the bar)
    seconds: float = 0.0
    search: Search | None = None

    def job(self):
        from dataclasses import replace

        return self.prep.make_jobs([replace(self.method, config=self.config)])[-1]


def tune(preps: list[Prepared], executor, progress: bool = True) -> None:
    """Search every method of every prepared run (one per task draw) on the validation variants of its
    tasks; each run's methods become the chosen configs (keys unchanged) and ``prep.tuning`` holds the
    searches. The searches advance side by side: each round sends every running search's next
    merge-evaluation to ``executor`` at once (so a Ray executor evaluates them in parallel). Every validation
    evaluation goes through the result cache, so a rerun replays the searches without evaluating."""
    from dataclasses import replace

    from tqdm import tqdm

    from ..evaluation.harness import describe_tasks
    from ..evaluation.tasks import VALIDATION_SUFFIX
    from ..io.files import content_hash
    from ..merging.methods import get_method
    from .scores import normalized_or_none

    val = VALIDATION_SUFFIX
    wanted = sorted({f"{t}{val}" for p in preps for t in p.tasks})
    described = describe_tasks(preps[0].bb, wanted, preps[0].manager, preps[0].cfg.limit) if preps else {}
    for prep in preps:
        prep.infos.update({f"{t}{val}": described[f"{t}{val}"] for t in prep.tasks})
    grids = [[get_method(m.spec).search_grid(m.config) for m in p.methods] for p in preps]
    total = sum(len(p.tasks) * (1 + sum(_budget_upper(g, BUDGET) for g in gs)) for p, gs in zip(preps, grids))
    bar = tqdm(total=total, desc="tuning", unit="task", disable=not progress)

    def evaluate(pairs: list[tuple[Prepared, Any]]) -> list[float]:
        """Each (prep, job) on the validation variants of the prep's tasks, what is not cached evaluated in one
        executor call; returns each pair's seconds."""
        works, owner, seen = [], [], set()
        for k, (prep, job) in enumerate(pairs):
            # Not cached, and not already asked for this round (task draws share their LoRA rows).
            missing = [v for v in (f"{t}{val}" for t in job.tasks) if not prep.cached(job, v)
                       and content_hash(prep.key(job.variant, v)) not in seen]
            seen.update(content_hash(prep.key(job.variant, v)) for v in missing)
            bar.update(len(job.tasks) - len(missing))
            if missing:
                works.append(prep.work(job, missing))
                owner.append(k)
        seconds = [0.0] * len(pairs)
        for k, (_, s) in zip(owner, executor.run(works, bar.update)):
            seconds[k] = s
        return seconds

    def val_scores(prep, job) -> dict[str, float]:
        return {t: prep.cache.get(prep.key(job.variant, f"{t}{val}"))["score"] for t in job.tasks}

    # Each task's LoRA on its own validation variant: the objective's denominators.
    lora_jobs = [(p, job) for p in preps for job in p.jobs[1:1 + len(p.tasks)]]
    evaluate(lora_jobs)
    lora_val = [{t: s for job in p.jobs[1:1 + len(p.tasks)] for t, s in val_scores(p, job).items()} for p in preps]
    for prep, scores in zip(preps, lora_val):
        bad = sorted(t for t, s in scores.items() if s <= 0)
        if bad:
            raise ValueError(f"tuned track: the LoRA scores 0 on the validation variant of {bad}, so the "
                             "objective (merged_val / LoRA_val) is undefined there")

    running = []
    for i, prep in enumerate(preps):
        for m, grid in zip(prep.methods, grids[i]):
            steps = search_steps(grid, m.config)
            running.append(_Running(prep, m, steps, next(steps), _budget_upper(grid, BUDGET)))
    active = list(running)
    while active:
        bar.set_postfix_str(", ".join(sorted({r.method.key for r in active})))
        jobs = [r.job() for r in active]
        for r, s in zip(active, evaluate([(r.prep, job) for r, job in zip(active, jobs)])):
            r.seconds += s
        for r, job in zip(active, jobs):
            try:
                r.config = r.steps.send(normalized_or_none(val_scores(r.prep, job), lora_val[preps.index(r.prep)]))
            except StopIteration as done:
                r.search = done.value
                bar.total -= len(r.prep.tasks) * (r.upper - r.search.evaluations)
        active = [r for r in active if r.search is None]
    bar.close()
    for prep in preps:
        mine = [r for r in running if r.prep is prep]
        prep.tuning = {r.method.key: {**r.search.to_dict(), "seconds": round(r.seconds, 2)} for r in mine}
        prep.methods = [replace(r.method, config=r.search.chosen) for r in mine]
        prep.jobs = prep.make_jobs(prep.methods)
