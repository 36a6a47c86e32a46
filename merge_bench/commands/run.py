"""``merge-bench run``: the whole protocol on one backbone (the embedded ``tiny`` by default)."""
from __future__ import annotations

from pathlib import Path

from ..backbones import DEFAULT_BACKBONE
from ..bench.plan import DEFAULT_METHODS


def parse_method_params(items: list[str], methods: list[str] | None = None) -> dict[str, dict[str, str]]:
    """``method.key=value`` items into {method: {key: value}} (values parsed later, typed by each Param).
    A bare ``key=value`` (the ``merge`` and ``submit`` form) is accepted when ``methods`` is one method."""
    params: dict[str, dict[str, str]] = {}
    single = methods[0] if methods is not None and len(methods) == 1 and methods != ["all"] else None
    for item in items:
        name, eq, value = item.partition("=")
        method, dot, key = name.partition(".")
        if eq and not dot and method and single is not None:
            method, key = single, name
        elif not eq or not dot or not method or not key:
            raise ValueError(f"bad --param {item!r}: expected method.key=value, e.g. star.eta=20 (key=value alone "
                             "only when --methods names one method)")
        params.setdefault(method, {})[key] = value
    return params


def split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_run_options(p) -> None:
    """Options shared by run, submit and check."""
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"backbone name or alias (default: {DEFAULT_BACKBONE}; see the README's backbones)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--n-tasks", help="draw this many of the backbone's tasks with --seed; several sizes "
                                         "(2,4,6) or --draws make a protocol-v2 sweep over task draws")
    group.add_argument("--tasks", help="comma-separated task names, or 'paper' for the STAR paper's set")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method parameter, e.g. star.eta=20 (KEY=VALUE alone when one method runs); "
                        "repeatable")
    p.add_argument("--draws", help="task draws per size: a number, or 'all' subsets (at most 15 per size)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the task pick and the task draws, and lm-eval's seeds (default: 42)")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto",
                   help="auto (default): the backbone's declared backend when it can run here, else hf")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda[:N]")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="evaluation dtype (default: the backbone's on a GPU, float32 on a CPU)")
    p.add_argument("--verbose", action="store_true", help="keep the progress bars and notices of lm-eval and git")
    p.add_argument("--limit", type=int, help="evaluate only the first N sampled documents per task (debugging)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the backbone's)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where run records go (default: runs/)")
    add_executor_options(p)


def add_executor_options(p) -> None:
    """Where the evaluations run (run and submit)."""
    p.add_argument("--executor", choices=("sequential", "ray"), default="sequential",
                   help="sequential (default): one evaluator in this process; ray: Ray actors, one evaluator each "
                        "(pip install 'merge-bench[ray]')")
    p.add_argument("--address", help="ray: 'auto' or HOST:PORT of a running cluster (default: $RAY_ADDRESS, "
                                     "else a local cluster)")
    p.add_argument("--workers", type=int, help="ray: actors to start (default: the cluster's GPUs on a GPU run, "
                                               "else its CPUs)")


def executor_config(args):
    from ..bench.plan import ExecutorConfig

    return ExecutorConfig(args.executor, args.address, args.workers)


def parse_sizes(n_tasks: str | None, draws: str | None) -> tuple[int | None, list[int] | None, int | str | None]:
    """(n_tasks, sizes, draws): one size alone is a plain run; several sizes or --draws make a sweep."""
    def number(text: str, what: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{what} {text!r}: expected a whole number") from None

    sizes = [number(t, "--n-tasks") for t in split_list(n_tasks) or []]
    if draws is not None:
        draws = draws if draws == "all" else number(draws, "--draws")
    if draws is None and len(sizes) <= 1:
        return (sizes[0] if sizes else None), None, None
    if not sizes:
        raise ValueError("--draws needs the set sizes: --n-tasks N or N1,N2,...")
    return None, sizes, draws


def config_from_args(args, methods: list[str] | None):
    from ..bench.run import RunConfig

    n_tasks, sizes, draws = parse_sizes(args.n_tasks, args.draws)
    return RunConfig(backbone=args.backbone, n_tasks=n_tasks, sizes=sizes, draws=draws, tasks=split_list(args.tasks),
                     methods=methods,
                     params=parse_method_params(args.param, methods), seed=args.seed, backend=args.backend,
                     device=args.device, dtype=args.dtype, limit=args.limit, out=args.out,
                     batch_size=args.batch_size, save_merged=getattr(args, "save_merged", False),
                     verbose=args.verbose, track=getattr(args, "track", "default"),
                     protocol=getattr(args, "protocol", "default"),
                     executor=executor_config(args))


def run(args) -> int:
    methods = split_list(args.methods)
    if args.methods is not None and not methods:
        raise ValueError(f"--methods {args.methods!r} names no method; expected 'all' or comma-separated names "
                         f"(default: {', '.join(DEFAULT_METHODS)})")
    if args.tasks is not None and not split_list(args.tasks):
        raise ValueError(f"--tasks {args.tasks!r} names no task; expected comma-separated task names or 'paper'")
    cfg = config_from_args(args, methods)
    if cfg.sizes is not None:
        from ..bench.sweep import dry_run_sweep, run_sweep

        dry_run_sweep(cfg) if args.dry_run else run_sweep(cfg)
        return 0
    from ..bench.run import dry_run, run_benchmark

    dry_run(cfg) if args.dry_run else run_benchmark(cfg)
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="evaluate pretrained, LoRA and merged models; print normalized scores",
                       description="The protocol on one backbone: pick tasks, evaluate the pretrained model, each "
                                   "task's LoRA on its own task and every merge on every task; print the table of "
                                   "normalized scores (100 · merged / LoRA) and write a run record under --out. "
                                   "Results are cached, so a rerun evaluates only what is new.")
    add_run_options(p)
    p.add_argument("--methods", help="'all' or comma-separated method names (default: "
                                     f"{', '.join(DEFAULT_METHODS)})")
    p.add_argument("--track", choices=("default", "tuned"), default="default",
                   help="default: every method at its defaults; tuned: each method's grid searched on the "
                        "tasks' validation variants first (at most 8 merge-evaluations), then tested at its choice")
    p.add_argument("--protocol", choices=("default", "reference"), default="default",
                   help="default: merge-bench's protocol with its fixes; reference: the STAR reference's items, inputs "
                        "and scoring, to reproduce the paper's table (with --tasks paper)")
    p.add_argument("--save-merged", action="store_true", help="also write each merged model under OUT/merged/")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (tasks, methods, runtime, where each model resolves, evaluations cached "
                        "and to run, time estimate) and exit without evaluating")
    p.set_defaults(func=run)
