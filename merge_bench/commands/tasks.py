"""``merge-bench tasks [--suite S]``: list the benchmark tasks the task YAMLs define."""
from __future__ import annotations

HEADERS = ["task", "dataset", "split", "n", "metric", "max tokens", "adapter"]


def task_rows(suite: str | None = None) -> list[list[str]]:
    """One row per task of ``suite`` (all suites when None): the columns of ``HEADERS``."""
    from ..evaluation.tasks import list_tasks

    rows = []
    for t in list_tasks(suite):
        dataset = t.dataset + (f" ({t.config})" if t.config else "")
        split = t.split + (f" [{t.holdout}]" if t.holdout else "")
        rows.append([t.name, dataset, split, t.sample, t.metric, str(t.max_new_tokens),
                     "yes" if t.has_adapter else "no"])
    return rows


def task_table(suite: str | None = None) -> str:
    from tabulate import tabulate

    return tabulate(task_rows(suite), headers=HEADERS)


def run(args) -> int:
    suite = args.suite
    if args.backbone:
        from ..backbones import get_backbone

        bb = get_backbone(args.backbone)
        if suite and suite != bb.suite:
            raise ValueError(f"--suite {suite} contradicts --backbone {args.backbone} (suite {bb.suite})")
        suite = bb.suite
    print(task_table(suite))
    return 0


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the benchmark tasks: dataset, split, sample size, metric")
    p.add_argument("--suite", help="only this suite (flan, llama, mistral, tiny); default: all")
    p.add_argument("--backbone", help="only the task variants of this backbone (e.g. mistral, tiny)")
    p.set_defaults(func=run)
