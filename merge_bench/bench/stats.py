"""Protocol v2 uncertainty: a hierarchical paired bootstrap of normalized scores (protocol.md, "Uncertainty").

Input: per-item scores. A ``Draw`` maps task names to ``TaskItems`` (the pretrained row, the task's own LoRA
row and every method's row on the same items). A task that appears in several draws must carry the same
items and the same reference rows (pretrained, LoRA), because those are shared across draws; its method rows
differ from draw to draw (each draw merges another task set).

One replicate: the outer level resamples the D draws with replacement (only when D > 1); the inner level
resamples each task's items with replacement, with one index vector per task shared by every row and by every
draw containing the task (paired). The replicate recomputes each task score (the mean, or Spearman's ρ of the
resampled pairs), the per-draw mean of ratios 100·m(t)/lora(t), and averages over the resampled draws.

Decisions where the protocol is silent:
- Replicates in which a resampled LoRA task score of a used draw is ≤ 0 have an undefined ratio: they are
  dropped for every row at once (so pairing is kept) and counted in ``dropped_replicates``. An observed LoRA
  score ≤ 0 raises ValueError naming the task (the caller shows n/a).
- Spearman of a constant vector is 0.0 (as ``evaluation.scoring.spearman``); ranks are computed in numpy
  (average ranks for ties) so results do not depend on whether scipy is installed.
- Ranks are competition ("min") ranks, rank 1 = best: methods tied in a replicate share the better rank, so
  "could be best" reads as a rank interval starting at 1. The rank interval is [2.5 % quantile, lower;
  97.5 % quantile, higher], integers. The leader is the highest point estimate (first in input order on ties).
- between-draw SD uses ddof = 1. Pairwise p = 2·min(P(Δ ≤ 0), P(Δ ≥ 0)) floored at 1/(B+1), capped at 1;
  Holm-adjusted; a claim is significant when the adjusted p ≤ alpha. The pretrained row gets a mean, CI and SD
  but takes no part in ranks, ties or claims.
- B = 0 means no resampling: every interval is the point estimate, P(Δ > 0) is 1 or 0, every p is 1.

The retained gain, 100 · (merged − pretrained) / (LoRA − pretrained) per task, averaged like the normalized
score (over a draw's tasks, then over the draws), gives no credit for what the untrained base already scores:
pretrained is 0, the LoRA 100, and a merge that guesses like the base earns 0 where the normalized score gives
it the base's share of the LoRA. Its CI comes from the same replicates (same plan, same pairing). Decisions:
tasks where the observed LoRA does not beat pretrained are excluded from it (the denominator measures noise)
and named in ``retained_excluded``; a replicate in which a kept task's resampled LoRA − pretrained is ≤ 0 is
dropped from the retained CI only (``retained_dropped_replicates``); a draw with no kept task makes the
retained gain n/a (None) for every row.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

DEFAULT_B = 2000
DEFAULT_SEED = 20240
DEFAULT_REFERENCE = "simple_avg"
KINDS = ("mean", "spearman")


@dataclass(frozen=True)
class TaskItems:
    """Per-item scores of one task. kind "mean": 1-D arrays (0/1 labels or F1 in [0, 1]); kind "spearman":
    arrays of shape (n, 2) holding (prediction, gold) pairs, the gold column being the same in every row."""
    kind: str
    pretrained: Sequence
    lora: Sequence
    methods: Mapping[str, Sequence]


@dataclass(frozen=True)
class Draw:
    """One task draw: the tasks of the set, each with its items."""
    tasks: Mapping[str, TaskItems]


@dataclass(frozen=True)
class ResamplePlan:
    """The index draws of a bootstrap: outer (B, D) draw indices; inner task -> (B, n_task) item indices."""
    outer: np.ndarray
    inner: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class _Task:
    kind: str
    X: np.ndarray               # (n, R): columns lora, pretrained, *methods (predictions for spearman)
    gold: np.ndarray | None     # (n,) for spearman


@dataclass(frozen=True)
class _Data:
    methods: list[str]
    tasks: dict[str, _Task]           # each task's first occurrence: its size, kind and reference rows
    draws: list[dict[str, _Task]]     # each draw's own tasks (method columns differ between draws)


def _task(name: str, items: TaskItems, methods: list[str]) -> _Task:
    """Validated column matrix of one task; errors name the task."""
    if items.kind not in KINDS:
        raise ValueError(f"task {name!r}: kind must be one of {KINDS}, got {items.kind!r}")
    if set(items.methods) != set(methods):
        raise ValueError(f"task {name!r}: methods {sorted(items.methods)} differ from {sorted(methods)}")
    rows = [np.asarray(a, dtype=float) for a in (items.lora, items.pretrained, *(items.methods[m] for m in methods))]
    shape = (len(rows[0]), 2) if items.kind == "spearman" else (len(rows[0]),)
    if shape[0] < 1 or any(r.shape != shape for r in rows):
        raise ValueError(f"task {name!r}: every row needs shape (n,{' 2' if len(shape) == 2 else ''}), n ≥ 1")
    if not all(np.isfinite(r).all() for r in rows):
        raise ValueError(f"task {name!r}: non-finite item score")
    if items.kind == "mean":
        return _Task("mean", np.stack(rows, axis=1), None)
    gold = rows[0][:, 1]
    if any(not np.array_equal(r[:, 1], gold) for r in rows):
        raise ValueError(f"task {name!r}: the gold column differs between rows")
    return _Task("spearman", np.stack([r[:, 0] for r in rows], axis=1), gold)


def _prepare(draws: Sequence[Draw]) -> _Data:
    """Checks that draws share one method list and that a repeated task carries the same items."""
    if not draws or any(not d.tasks for d in draws):
        raise ValueError("the bootstrap needs at least one draw, each with at least one task")
    methods = list(next(iter(draws[0].tasks.values())).methods)
    if not methods:
        raise ValueError("the bootstrap needs at least one method")
    tasks: dict[str, _Task] = {}
    per_draw: list[dict[str, _Task]] = []
    for d in draws:
        mine = {name: _task(name, items, methods) for name, items in d.tasks.items()}
        for name, t in mine.items():
            old = tasks.setdefault(name, t)
            same = (old.kind == t.kind and old.X.shape == t.X.shape and np.array_equal(old.X[:, :2], t.X[:, :2])
                    and (t.gold is None or np.array_equal(old.gold, t.gold)))
            if not same:
                raise ValueError(f"task {name!r} appears in several draws with different items or reference rows")
        per_draw.append(mine)
    return _Data(methods, tasks, per_draw)


def make_plan(draws: Sequence[Draw], B: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> ResamplePlan:
    """Seeded index draws: outer first (zeros when D = 1), then each task in sorted name order."""
    data, rng = _prepare(draws), np.random.default_rng(seed)
    D = len(data.draws)
    outer = rng.integers(0, D, size=(B, D)) if D > 1 else np.zeros((B, 1), dtype=np.int64)
    inner = {t: rng.integers(0, len(data.tasks[t].X), size=(B, len(data.tasks[t].X))) for t in sorted(data.tasks)}
    return ResamplePlan(outer, inner)


def identity_plan(draws: Sequence[Draw], B: int = 1) -> ResamplePlan:
    """B replicates that resample nothing (every draw once, every item once): each equals the point estimate."""
    return identity_plan_of(_prepare(draws), B)


def identity_plan_of(data: "_Data", B: int = 1) -> ResamplePlan:
    outer = np.tile(np.arange(len(data.draws)), (B, 1))
    return ResamplePlan(outer, {t: np.tile(np.arange(len(v.X)), (B, 1)) for t, v in data.tasks.items()})


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Row-wise ranks 1..n of a 2-D array, ties sharing the mean of their positions (scipy's "average")."""
    a = np.atleast_2d(np.asarray(a, dtype=float))
    B, n = a.shape
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    starts = np.ones((B, n), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = np.cumsum(starts.ravel()) - 1            # tie-group ids; each row opens a new group
    pos = np.tile(np.arange(1, n + 1, dtype=float), B)
    mean_pos = np.bincount(gid, weights=pos) / np.bincount(gid)
    ranks = np.empty((B, n))
    np.put_along_axis(ranks, order, mean_pos[gid].reshape(B, n), axis=1)
    return ranks


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r; 0.0 where a row has no variance."""
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (xc * xc).sum(axis=1), (yc * yc).sum(axis=1), (xc * yc).sum(axis=1)
    ok = (sxx > 0) & (syy > 0)
    out = np.zeros(len(x))
    out[ok] = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
    return out


def _task_scores(task: _Task, idx: np.ndarray) -> np.ndarray:
    """(B, R) task scores ×100 on the resampled items; means come from per-replicate counts @ item scores."""
    B, n = idx.shape
    if task.kind == "mean":
        flat = (idx + n * np.arange(B)[:, None]).ravel()
        counts = np.bincount(flat, minlength=B * n).reshape(B, n).astype(float)
        return (counts @ task.X) * (100.0 / n)
    gold_ranks = average_ranks(task.gold[idx])
    cols = [_pearson_rows(average_ranks(task.X[:, r][idx]), gold_ranks) for r in range(task.X.shape[1])]
    return 100.0 * np.stack(cols, axis=1)


def task_scores(name: str, kind: str, rows: Sequence[Sequence], idx: np.ndarray) -> np.ndarray:
    """(B, len(rows)) scores ×100 of each row of one task on the items ``idx`` picks ((B, n) indices)."""
    if len(rows) < 2:
        raise ValueError(f"task {name!r}: task_scores needs at least two rows")
    items = TaskItems(kind, rows[1], rows[0], {str(i): r for i, r in enumerate(rows[2:])})
    return _task_scores(_task(name, items, [str(i) for i in range(len(rows) - 2)]), idx)


def _ratios(scores: np.ndarray) -> np.ndarray:
    """100·row/lora for the non-LoRA columns; NaN in replicates whose LoRA score is ≤ 0."""
    lora = scores[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 100.0 * scores[:, 1:] / lora
    r[lora[:, 0] <= 0] = np.nan
    return r


def _per_draw(data: _Data, plan: ResamplePlan) -> np.ndarray:
    """(D, B, R-1): each draw's mean of ratios per replicate, columns pretrained, *methods."""
    return np.stack([sum(_ratios(_task_scores(task, plan.inner[t])) for t, task in d.items()) / len(d)
                     for d in data.draws])


def _gains(scores: np.ndarray) -> np.ndarray:
    """100·(row − pretrained)/(lora − pretrained) for the non-LoRA columns; NaN where lora − pretrained ≤ 0."""
    base = scores[:, 1:2]
    span = scores[:, :1] - base
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 100.0 * (scores[:, 1:] - base) / span
    g[span[:, 0] <= 0] = np.nan
    return g


def _per_draw_gain(data: _Data, plan: ResamplePlan, kept: set[str]) -> np.ndarray:
    """(D, B, R-1): each draw's mean retained gain over its kept tasks; NaN for a draw without one."""
    out = []
    for d in data.draws:
        mine = [t for t in d if t in kept]
        if not mine:
            out.append(np.full((plan.outer.shape[0], len(data.methods) + 1), np.nan))
            continue
        out.append(sum(_gains(_task_scores(d[t], plan.inner[t])) for t in mine) / len(mine))
    return np.stack(out)


def _retained(data: _Data, plan: ResamplePlan | None, kept: set[str]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(per-draw point (D, R-1), defined replicates (B', R-1), dropped count); None when a draw keeps no task."""
    per_draw = _per_draw_gain(data, identity_plan_of(data), kept)[:, 0]
    if np.isnan(per_draw).any():
        return None
    point = per_draw.mean(axis=0)
    if plan is None:
        return per_draw, point[None], 0
    reps = _combine(_per_draw_gain(data, plan, kept), plan.outer)
    keep = ~np.isnan(reps).any(axis=1)
    return per_draw, (reps[keep] if keep.any() else point[None]), int((~keep).sum())


def _combine(per_draw: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(B, R-1): the mean over each replicate's resampled draws; NaN where a used draw is undefined."""
    D, B, _ = per_draw.shape
    w = np.bincount((outer + D * np.arange(B)[:, None]).ravel(), minlength=B * D).reshape(B, D).astype(float)
    picked = per_draw.transpose(1, 0, 2)
    out = np.einsum("bd,bdr->br", w, np.nan_to_num(picked)) / outer.shape[1]
    out[(np.isnan(picked).any(axis=2) & (w > 0)).any(axis=1)] = np.nan
    return out


def replicate_scores(draws: Sequence[Draw], plan: ResamplePlan) -> tuple[list[str], np.ndarray]:
    """Normalized score per replicate of ``plan``: (column names "pretrained", *methods; (B, R) matrix)."""
    data = _prepare(draws)
    return ["pretrained", *data.methods], _combine(_per_draw(data, plan), plan.outer)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n, in percent (sane at 0 % and 100 %, unlike p ± z·se)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    p, zz = k / n, z * z
    denom = 1.0 + zz / n
    center = (p + zz / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / denom
    return max(0.0, 100 * (center - half)), min(100.0, 100 * (center + half))


def holm(p: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values: running max of (m − i)·p_(i) over the ascending p, capped at 1."""
    p = np.asarray(p, dtype=float)
    order, out = np.argsort(p, kind="stable"), np.empty(len(p))
    out[order] = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    return out.tolist()


def rounded(x, nd: int = 4):
    """JSON-ready: floats rounded to nd decimals, NaN as None, tuples as lists, numpy scalars unwrapped."""
    return _r(x, nd)


def _r(x, nd: int = 4):
    """JSON-ready: floats rounded to nd decimals, NaN as None, tuples as lists, numpy scalars unwrapped."""
    if isinstance(x, dict):
        return {k: _r(v, nd) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_r(v, nd) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else round(float(x), nd)
    return x.item() if isinstance(x, np.generic) else x


class _Json:
    def to_dict(self) -> dict:
        """Plain JSON-serializable dict (nested results included), floats rounded to 4 decimals."""
        return _r(asdict(self))


@dataclass(frozen=True)
class RowStats(_Json):
    """One row. Δ (to the reference), rank and tie fields are None for the pretrained row."""
    normalized: float
    normalized_ci95: tuple[float, float]
    per_draw: list[float]
    draw_sd: float | None
    delta: float | None = None
    delta_ci95: tuple[float, float] | None = None
    p_delta_gt0: float | None = None
    rank: int | None = None
    rank_ci95: tuple[int, int] | None = None
    tied_with_leader: bool | None = None
    retained: float | None = None            # the retained gain (module docstring); None when n/a
    retained_ci95: tuple[float, float] | None = None
    retained_per_draw: list[float] | None = None


@dataclass(frozen=True)
class PairClaim(_Json):
    """Δ = a − b, its two-sided bootstrap p, the Holm-adjusted p, and whether that is ≤ alpha."""
    a: str
    b: str
    delta: float
    p: float
    p_holm: float
    significant: bool


@dataclass(frozen=True)
class TaskStats(_Json):
    """Raw task scores ×100 per row ("lora", "pretrained", *methods); Wilson intervals when items are 0/1."""
    kind: str
    n: int
    scores: dict[str, float]
    wilson95: dict[str, tuple[float, float]] | None
    lora_beats_pretrained: bool


@dataclass(frozen=True)
class BootstrapResult(_Json):
    B: int                      # replicates drawn (0: no resampling); seed None when not drawn from a seed
    seed: int | None
    n_draws: int
    reference: str | None
    alpha: float
    leader: str
    tie_group: list[str]        # the leader and every method tied with it, by point estimate
    dropped_replicates: int     # replicates with an undefined (LoRA ≤ 0) ratio
    methods: dict[str, RowStats]
    pretrained: RowStats
    pairs: list[PairClaim]
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    retained_excluded: list[str] = field(default_factory=list)  # tasks where the LoRA does not beat pretrained
    retained_dropped_replicates: int = 0


def _ci(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def _min_ranks(scores: np.ndarray) -> np.ndarray:
    """(B, M) competition ranks: 1 + the number of methods strictly better in that replicate."""
    return 1 + (scores[:, None, :] > scores[:, :, None]).sum(axis=2)


def _task_stats(data: _Data) -> dict[str, TaskStats]:
    """Per task (one draw) or per task and draw, keyed ``task@d`` (several draws)."""
    out, cols = {}, ["lora", "pretrained", *data.methods]
    several = len(data.draws) > 1
    for name, t in ((f"{n}@{d}" if several else n, t) for d, tasks in enumerate(data.draws) for n, t in tasks.items()):
        n = len(t.X)
        scores = dict(zip(cols, _task_scores(t, np.arange(n)[None])[0].tolist()))
        binary = t.kind == "mean" and bool(np.isin(t.X, (0.0, 1.0)).all())
        wil = {c: wilson(int(t.X[:, i].sum()), n) for i, c in enumerate(cols)} if binary else None
        out[name] = TaskStats(t.kind, n, scores, wil, scores["lora"] > scores["pretrained"])
    return out


def _pairs(names: list[str], point: np.ndarray, reps: np.ndarray, n_reps: int, alpha: float) -> list[PairClaim]:
    """Every pair of methods, two-sided bootstrap p-values, Holm-adjusted across all pairs."""
    ij = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    ps = []
    for i, j in ij:
        d = reps[:, i] - reps[:, j]
        ps.append(min(1.0, max(2.0 * min(np.mean(d <= 0), np.mean(d >= 0)), 1.0 / (n_reps + 1))))
    return [PairClaim(names[i], names[j], float(point[i] - point[j]), p, q, q <= alpha)
            for (i, j), p, q in zip(ij, ps, holm(ps))]


def _method_rows(names, point, reps, ref: int | None) -> dict[str, dict]:
    """Δ to the reference, ranks and the tie flag of each method (columns of point/reps are the methods)."""
    lead, ranks, point_ranks = int(np.argmax(point)), _min_ranks(reps), _min_ranks(point[None])[0]
    out = {}
    for i, name in enumerate(names):
        lo, hi = _ci(reps[:, i] - reps[:, lead])
        row = dict(rank=int(point_ranks[i]), tied_with_leader=lo <= 0 <= hi,
                   rank_ci95=(int(np.quantile(ranks[:, i], 0.025, method="lower")),
                              int(np.quantile(ranks[:, i], 0.975, method="higher"))))
        if ref is not None:
            d = reps[:, i] - reps[:, ref]
            row.update(delta=float(point[i] - point[ref]), delta_ci95=_ci(d), p_delta_gt0=float(np.mean(d > 0)))
        out[name] = row
    return out


def _replicates(data: _Data, plan: ResamplePlan | None, point: np.ndarray) -> tuple[np.ndarray, int]:
    """The defined replicates (the point itself when nothing is resampled) and how many were dropped."""
    if plan is None:
        return point[None], 0
    reps = _combine(_per_draw(data, plan), plan.outer)
    keep = ~np.isnan(reps[:, 0])
    if not keep.any():
        raise ValueError("every bootstrap replicate had a LoRA task score ≤ 0: the interval is undefined")
    return reps[keep], int((~keep).sum())


def bootstrap(draws: Sequence[Draw], B: int = DEFAULT_B, seed: int = DEFAULT_SEED,
              reference: str | None = DEFAULT_REFERENCE, alpha: float = 0.05,
              plan: ResamplePlan | None = None) -> BootstrapResult:
    """Protocol v2 statistics of every method (and the pretrained row) over the given draws.

    ``plan`` replaces the seeded index draws (B and seed are then ignored). The default reference is skipped
    when absent; a named one must exist. ValueError when an observed LoRA task score is ≤ 0 (caller: n/a).
    """
    data = _prepare(draws)
    tasks = _task_stats(data)
    bad = sorted({t.split("@")[0] for t, s in tasks.items() if s.scores["lora"] <= 0})
    if bad:
        raise ValueError(f"LoRA score ≤ 0 on task(s) {bad}: the normalized score is undefined")
    if reference is not None and reference not in data.methods:
        if reference != DEFAULT_REFERENCE:
            raise ValueError(f"reference method {reference!r} is not among {data.methods}")
        reference = None
    seed_used = seed if plan is None and B > 0 else None
    if plan is None and B > 0:
        plan = make_plan(draws, B, seed)
    per_draw = _per_draw(data, identity_plan(draws))[:, 0]                 # (D, R)
    point = _combine(per_draw[:, None], np.arange(len(per_draw))[None])[0]
    reps, dropped = _replicates(data, plan, point)
    n_reps = 0 if plan is None else len(reps)

    def base(c: int) -> dict:
        sd = float(np.std(per_draw[:, c], ddof=1)) if len(per_draw) > 1 else None
        return dict(normalized=float(point[c]), normalized_ci95=_ci(reps[:, c]),
                    per_draw=per_draw[:, c].tolist(), draw_sd=sd)

    names = data.methods
    kept = {t.split("@")[0] for t, s in tasks.items() if s.lora_beats_pretrained}
    excluded = sorted({t.split("@")[0] for t in tasks} - kept)
    gain = _retained(data, plan, kept)
    gain_dropped = gain[2] if gain is not None else 0

    def retained(c: int) -> dict:
        if gain is None:
            return {}
        per, greps, _ = gain
        return dict(retained=float(per[:, c].mean()), retained_ci95=_ci(greps[:, c]), retained_per_draw=per[:, c].tolist())

    ref = names.index(reference) if reference is not None else None
    extra = _method_rows(names, point[1:], reps[:, 1:], ref)
    methods = {n: RowStats(**base(i + 1), **extra[n], **retained(i + 1)) for i, n in enumerate(names)}
    tie_group = sorted((n for n in names if methods[n].tied_with_leader), key=lambda n: -methods[n].normalized)
    return BootstrapResult(B=n_reps + dropped, seed=seed_used, n_draws=len(per_draw), reference=reference,
                           alpha=alpha, leader=names[int(np.argmax(point[1:]))], tie_group=tie_group,
                           dropped_replicates=dropped, methods=methods, pretrained=RowStats(**base(0), **retained(0)),
                           pairs=_pairs(names, point[1:], reps[:, 1:], n_reps, alpha), tasks=tasks,
                           retained_excluded=excluded, retained_dropped_replicates=gain_dropped)
