"""``merge-bench run --n-tasks 2,4,6 --draws D``: protocol v2's task draws, one run over every set.

Each size N gets D task sets, the first N tasks of D seeded permutations of the backbone's pool (``draws``),
so the sets are nested in N and the same for every method. Every (variant, task) is evaluated once: the
pretrained and LoRA rows of a task are shared by every draw that contains it (through the result cache),
and one evaluator serves the whole sweep. Seeded methods (a ``seed`` parameter: dare, knots) take the draw's
index as their seed, so draw d of any size merges with seed d.

Decisions where the protocol is silent: a draw's tasks are listed (and merged) in the pool's order, so the
same set gives the same merge whatever draw it came from; a ``--param METHOD.seed`` is refused in a sweep;
one size only with ``--draws`` is still a sweep. The record (``record_version`` 2) holds, per size, every
draw's own run record (the v1 shape: scores, per-item scores, its one-draw CIs) and the statistics over the
draws (``stats.bootstrap``: mean, CI, between-draw SD, Δ to simple_avg, ranks, ties).
"""
from __future__ import annotations

import sys
from math import comb
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .. import __version__
from ..backbones import Backbone, get_backbone
from ..io.files import content_hash
from . import stats
from .draws import task_sets
from . import samples
from .outputs import check_out_dir, save_record
from .plan import MethodRun, RunConfig, last_throughput
from .provenance import git_commit, hardware
from .report import NA, stats_draw
from .prepared import Prepared
from .run import _evaluate, _record, plan_costs, refuse_missing, warn_unlocked
from .tune import tune

RECORD_VERSION = 2


@dataclass(frozen=True)
class DrawSpec:
    n: int
    index: int
    tasks: list[str]  # in the pool's order


def plan_draws(bb: Backbone, sizes: list[int], draws: int | str, seed: int) -> list[DrawSpec]:
    pool = bb.pickable_tasks
    order = {t: i for i, t in enumerate(pool)}
    sets = task_sets(pool, sizes, draws, seed)
    for n in sizes:
        distinct = comb(len(pool), n) if 1 <= n <= len(pool) else 0
        if n == len(pool) and draws != 1:
            print(f"warning: --n-tasks {n} is the whole pool of {bb.name} ({len(pool)} tasks): one task set, "
                  f"not --draws {draws}", file=sys.stderr)
        elif isinstance(draws, int) and draws > distinct:
            print(f"warning: --draws {draws} at N={n}: the pool of {len(pool)} tasks has only {distinct} distinct "
                  "sets of that size, so some draws repeat a set", file=sys.stderr)
    return [DrawSpec(n, d, sorted(s, key=order.__getitem__)) for n in sizes for d, s in enumerate(sets[n])]


def seeded(methods: list[MethodRun], index: int) -> list[MethodRun]:
    """The draw's methods: seed = the draw index for every method with a ``seed`` parameter; keys unchanged."""
    return [replace(m, config={**m.config, "seed": index}) if "seed" in m.config else m for m in methods]


def _check(cfg: RunConfig) -> None:
    if cfg.tasks is not None or cfg.n_tasks is not None:
        raise ValueError("a sweep takes its task sets from --n-tasks N1,N2,... and --draws, not --tasks")
    if not cfg.sizes:
        raise ValueError("a sweep needs at least one set size (--n-tasks 2,4,6)")
    if len(set(cfg.sizes)) != len(cfg.sizes):
        raise ValueError(f"--n-tasks names a size twice: {cfg.sizes}")
    seeded_params = sorted(m for m, p in cfg.params.items() if "seed" in p)
    if seeded_params:
        raise ValueError(f"--param {seeded_params[0]}.seed: in a sweep every seeded method takes the draw index "
                         "as its seed; leave the seed out")


def prepare_sweep(cfg: RunConfig, bb: Backbone, *, dry: bool = False) -> tuple[list[DrawSpec], list[Prepared]]:
    _check(cfg)
    specs = plan_draws(bb, list(cfg.sizes), cfg.draws if cfg.draws is not None else 1, cfg.seed)
    union = sorted({t for s in specs for t in s.tasks}, key=bb.pickable_tasks.index)
    single = replace(cfg, sizes=None, draws=None, n_tasks=None)
    whole = Prepared(replace(single, tasks=union), bb, dry=dry)  # hashes and describes every task once
    methods = whole.methods
    preps = [Prepared(replace(single, tasks=s.tasks), bb, dry=dry, methods=seeded(methods, s.index), like=whole)
             for s in specs]
    return specs, preps


def dry_run_sweep(cfg: RunConfig, *, backbone: Backbone | None = None) -> dict[str, Any]:
    """Print the sweep's draws and how many evaluations it needs (shared ones counted once); evaluate nothing."""
    bb = backbone or get_backbone(cfg.backbone)
    specs, preps = prepare_sweep(cfg, bb, dry=True)
    if preps[0].missing:
        refuse_missing(preps[0])
    keys: dict[str, tuple[bool, int]] = {}  # evaluation -> (to run, items)
    for prep in preps:
        pending = prep.pending()
        for job in prep.jobs:
            for t in job.tasks:
                keys[content_hash(prep.key(job.variant, t))] = (t in pending[job.name], prep.infos[t].n)
    todo = [n for run, n in keys.values() if run]
    rate = last_throughput(bb, preps[0].runtime)
    plan = {"backbone": bb.name, "draws": [asdict(s) for s in specs], "runtime": asdict(preps[0].runtime),
            "methods": {m.key: m.config for m in preps[0].methods},
            "evaluations": {"total": len(keys), "cached": len(keys) - len(todo), "to_run": len(todo),
                            "items": sum(todo)}}
    lines = [f"backbone {bb.name}: sweep over {len(specs)} task set(s) (seed {cfg.seed}); {preps[0].runtime.describe()}"]
    lines += [f"  N={s.n} draw {s.index}: {', '.join(s.tasks)}" for s in specs]
    lines.append("methods: " + "; ".join(f"{k} {v}" if v else k for k, v in plan["methods"].items())
                 + " (seeded methods: seed = the draw index)")
    lines.append(f"evaluations: {len(keys)} ({len(keys) - len(todo)} cached, {len(todo)} to run, {sum(todo)} items)")
    lines.append(f"executor: {cfg.executor.describe()}")
    lines += plan_costs(preps, plan, rate)
    print("\n".join(lines))
    return plan


def run_sweep(cfg: RunConfig, *, backbone: Backbone | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate every draw of every size, then print one table per size and write the sweep record."""
    check_out_dir(cfg.out)  # before the first evaluation, not after the last
    bb = backbone or get_backbone(cfg.backbone)
    specs, preps = prepare_sweep(cfg, bb)
    sizes = ", ".join(f"N={n}: {sum(s.n == n for s in specs)} draw(s)" for n in cfg.sizes)
    print(f"backbone {bb.name}: sweep {sizes} (seed {cfg.seed}); {preps[0].runtime.describe()}", file=sys.stderr)
    if preps[0].runtime.notice:
        print(f"note: {preps[0].runtime.notice}", file=sys.stderr)
    warn_unlocked(preps[0].versions)
    executor = preps[0].executor()
    try:
        if cfg.track == "tuned":
            tune(preps, executor, progress)
        _evaluate(preps, executor, progress)
    finally:
        executor.close()
    record = sweep_record(cfg, bb, specs, [_record(p, executor.describe()) for p in preps])
    path = Path(cfg.out) / f"{bb.name}-sweep-{content_hash([asdict(s) for s in specs])[:8]}-" \
                           f"{record['created'].replace(':', '')}.json"
    print(sweep_table(record))
    path = save_record(path, record, samples.collect(preps, [f"n{s.n}-d{s.index}" for s in specs]))
    print(f"run record: {path}", file=sys.stderr)
    return record


def sweep_record(cfg: RunConfig, bb: Backbone, specs: list[DrawSpec], records: list[dict]) -> dict[str, Any]:
    first = records[0]
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "merge_bench": {"version": __version__, "git_commit": git_commit()},
        "versions": first["versions"],
        "hardware": hardware(first["runtime"]["device"]),
        "runtime": first["runtime"],
        "executor": first["executor"],
        "config": {"backbone": bb.name, "sizes": list(cfg.sizes), "draws": cfg.draws if cfg.draws is not None else 1,
                   "seed": cfg.seed, "track": cfg.track, "protocol": cfg.protocol,
                   "methods": first["config"]["methods"], "params": cfg.params,
                   "limit": cfg.limit, "batch_size": cfg.batch_size, "backend": first["config"]["backend"],
                   "device": first["config"]["device"]},
        "backbone": first["backbone"],
        "sets": {},
    }
    for n in cfg.sizes:
        mine = [(s, r) for s, r in zip(specs, records) if s.n == n]
        record["sets"][str(n)] = {"n": n, "draws": [{"index": s.index, "tasks": s.tasks, "record": r} for s, r in mine],
                                  **sweep_stats([r for _, r in mine])}
    record["record_sha256"] = content_hash(record)
    return record


def sweep_stats(records: list[dict], B: int = stats.DEFAULT_B) -> dict[str, Any]:
    """The bootstrap over the draws of one size; None with the reason where a ratio is undefined."""
    undefined = sorted({t for r in records for t in r["normalization"]["undefined"]})
    unstable = sorted({t for r in records for t in r["normalization"]["unstable"]})
    notes = [r["normalization"]["note"] for r in records if r["normalization"]["note"]]
    out = {"normalization": {"undefined": undefined, "unstable": unstable, "note": "; ".join(dict.fromkeys(notes))
                             or None}}
    out["stats"] = None if undefined or not records[0]["methods"] else \
        stats.bootstrap([stats_draw(r) for r in records], B=B).to_dict()
    return out


def _interval(ci, fmt: str = ".2f") -> str:
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else ""


def _retained(row: dict) -> list:
    """The retained gain and its CI (n/a where a draw keeps no task; blank for a record made before it)."""
    if "retained" not in row:
        return ["", ""]
    return [NA, ""] if row["retained"] is None else [row["retained"], _interval(row["retained_ci95"])]


def sweep_table(record: dict) -> str:
    """One table per size: the mean over draws with its CI and between-draw SD, Δ to simple_avg with its CI
    and P(Δ > 0), the rank and its interval; ``=`` marks the methods tied with the leader."""
    parts = []
    for key, block in record["sets"].items():
        draws = block["draws"]
        head = f"N = {key}: {len(draws)} draw(s): " + "; ".join(",".join(d["tasks"]) for d in draws)
        st = block["stats"]
        if st is None:
            parts.append(f"{head}\nAvg. Normalized {NA}: {block['normalization']['note']}")
            continue
        headers = ["model", "Avg. Normalized", "95 % CI", "draw SD", "retained gain", "95 % CI", "Δ vs simple_avg",
                   "Δ 95 % CI", "P(Δ>0)", "rank", "rank 95 %", "tied 1st"]
        pre = st["pretrained"]
        rows = [["pretrained", pre["normalized"], _interval(pre["normalized_ci95"]), pre["draw_sd"] or "",
                 *_retained(pre), "", "", "", "", "", ""]]
        for name, m in sorted(st["methods"].items(), key=lambda kv: -kv[1]["normalized"]):
            delta = "" if m["delta"] is None else m["delta"]
            rows.append([name, m["normalized"], _interval(m["normalized_ci95"]), m["draw_sd"] or "", *_retained(m), delta,
                         _interval(m["delta_ci95"]), "" if m["p_delta_gt0"] is None else m["p_delta_gt0"],
                         m["rank"], _interval(m["rank_ci95"], "d"), "=" if m["tied_with_leader"] else ""])
        text = tabulate(rows, headers=headers, floatfmt=".2f")
        text += f"\ntied for first (paired 95 % CI of the difference to {st['leader']} contains 0): " \
                f"{', '.join(st['tie_group'])}"
        if block["normalization"]["note"]:
            text += f"\n* {block['normalization']['note']}"
        if st.get("retained_excluded"):
            text += f"\nleft out of the retained gain (the LoRA does not beat pretrained): {', '.join(st['retained_excluded'])}"
        parts.append(f"{head}\n{text}")
    return "\n\n".join(parts)
