"""``merge-bench submit``: run the protocol for one method and write its leaderboard entry."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args) -> int:
    from ..backbones import get_backbone
    from ..leaderboard import default_root
    from ..leaderboard.submit import parse_params, submit_sweep

    from .run import executor_config, parse_sizes

    if args.tasks:
        raise ValueError("--tasks: leaderboard entries are run on the protocol's seeded task draws; give --n-tasks N "
                         "(or N1,N2,...) and --draws D (without --draws: one draw per size)")
    n_tasks, sizes, draws = parse_sizes(args.n_tasks, args.draws)
    if sizes is None:  # one size (or the whole pool) and no --draws: one draw
        sizes, draws = [n_tasks if n_tasks is not None else len(get_backbone(args.backbone).pickable_tasks)], 1
    root = Path(args.root) if args.root else default_root()
    for r in submit_sweep(args.method, args.backbone, root=root, sizes=sizes, draws=draws if draws is not None else 1,
                          params=parse_params(args.method, args.param), seed=args.seed, backend=args.backend,
                          device=args.device, overwrite=args.overwrite, out=Path(args.out) if args.out else None,
                          batch_size=args.batch_size, track=args.track, executor=executor_config(args)):
        e = r.entry
        retained = "n/a" if e.result.retained is None else f"{e.result.retained:.2f}"
        print(f"submit: {r.status} {r.path}\n  {e.method.key} on {e.backbone} · {e.track} · N = {e.n_tasks} "
              f"({len(e.draw_set.draws)} draw(s)): Avg. Normalized {e.result.normalized:.2f} "
              f"[{e.result.ci95[0]:.2f}, {e.result.ci95[1]:.2f}], retained gain {retained}")
    print("  next: merge-bench leaderboard validate && merge-bench leaderboard build, then commit the entries, "
          "their items/ files and the regenerated files (see leaderboard/CONTRIBUTING.md)")
    return 0


def register(sub) -> None:
    from .run import add_executor_options

    p = sub.add_parser("submit", help="run the standard protocol for a method and add its leaderboard entry")
    p.add_argument("--method", required=True, help="a registered method name or path/to/file.py:Class")
    p.add_argument("--backbone", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n-tasks", help="set sizes, N or N1,N2,... (default: the whole pool); one entry per size")
    group.add_argument("--tasks", help=argparse.SUPPRESS)  # refused with a message: entries use seeded draws
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a method parameter (repeatable)")
    p.add_argument("--draws", help="task draws per size, a number or 'all' (default 1: one draw)")
    p.add_argument("--track", choices=("default", "tuned"), default="default",
                   help="protocol v2 track: default parameters, or tuned on the validation variants first")
    p.add_argument("--seed", type=int, default=42, help="protocol seed (default 42)")
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"),
                   help="auto (default): the backbone's declared backend when it can run here, else hf")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda[:N]")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the backbone's)")
    p.add_argument("--root", help="leaderboard directory (default: the repository's leaderboard/)")
    p.add_argument("--out", help="run output directory (default: run's own)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry with different results")
    add_executor_options(p)
    p.set_defaults(func=run)
