"""``merge-bench submit``: run the protocol for one method and write its leaderboard entry."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from ..leaderboard import default_root, submit
    from ..leaderboard.submit import parse_params

    from .run import executor_config, parse_sizes

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    n_tasks, sizes, draws = parse_sizes(args.n_tasks, args.draws)
    root = Path(args.root) if args.root else default_root()
    if sizes is not None:
        from ..leaderboard.submit import submit_sweep

        if tasks:
            raise ValueError("--tasks names one task set; a protocol-v2 submission takes --n-tasks and --draws")
        for r in submit_sweep(args.method, args.backbone, root=root, sizes=sizes, draws=draws,
                              params=parse_params(args.method, args.param), seed=args.seed, backend=args.backend,
                              device=args.device, overwrite=args.overwrite, out=Path(args.out) if args.out else None,
                              batch_size=args.batch_size, track=args.track, executor=executor_config(args)):
            e = r.entry
            print(f"submit: {r.status} {r.path}\n  {e.method.key} on {e.backbone} · {e.track} · N = {e.n_tasks} "
                  f"({len(e.draw_set.draws)} draws): Avg. Normalized {e.result.normalized:.2f} "
                  f"[{e.result.ci95[0]:.2f}, {e.result.ci95[1]:.2f}]")
        print("  next: merge-bench leaderboard validate && merge-bench leaderboard build, then commit the entries, "
              "their items/ files and the regenerated files (see leaderboard/CONTRIBUTING.md)")
        return 0
    if args.executor != "sequential":
        raise ValueError("--executor ray runs protocol-v2 submissions: give --n-tasks N1,N2 and --draws D")
    if args.track != "default":
        raise ValueError("--track tuned makes protocol-v2 entries: give --n-tasks N1,N2 and --draws D")
    result = submit(
        args.method, args.backbone, root=root, n_tasks=n_tasks,
        tasks=tasks, params=parse_params(args.method, args.param), seed=args.seed, backend=args.backend,
        device=args.device, overwrite=args.overwrite, out=Path(args.out) if args.out else None,
        batch_size=args.batch_size,
    )
    e = result.entry
    print(f"submit: {result.status} {result.path}\n  {e.method.key} on {e.backbone} · {e.task_set.id}: "
          f"Avg. Normalized {e.normalized:.2f} (pretrained {e.pretrained.normalized:.2f})")
    if result.status != "unchanged":
        print("  next: merge-bench leaderboard validate && merge-bench leaderboard build, then commit the entry "
              "and the regenerated files (see leaderboard/CONTRIBUTING.md)")
    return 0


def register(sub) -> None:
    from .run import add_executor_options

    p = sub.add_parser("submit", help="run the standard protocol for a method and add its leaderboard entry")
    p.add_argument("--method", required=True, help="a registered method name or path/to/file.py:Class")
    p.add_argument("--backbone", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n-tasks", help="merge K tasks drawn with the run's seed (default: all); several sizes "
                                         "(2,4,6) or --draws make protocol-v2 entries (one per size)")
    group.add_argument("--tasks", help="comma-separated task names")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a method parameter (repeatable)")
    p.add_argument("--draws", help="protocol v2: task draws per size, a number or 'all'")
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
