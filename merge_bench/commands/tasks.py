"""``merge-bench tasks [--suite S]``: list the benchmark tasks the task YAMLs define."""
from __future__ import annotations

HEADERS = ["task", "dataset", "split", "n", "metric", "max tokens", "adapter"]


def task_rows(suite: str | None = None) -> list[list[str]]:
    """One row per task of ``suite`` (all suites when None): the columns of ``HEADERS``."""
    from ..evaluation.tasks import list_tasks

    return task_rows_of(list_tasks(suite))


def task_rows_of(infos) -> list[list[str]]:
    rows = []
    for t in infos:
        dataset = t.dataset + (f" ({t.config})" if t.config else "")
        split = t.split + (f" [{t.holdout}]" if t.holdout else "")
        rows.append([t.name, dataset, split, t.sample, t.metric, str(t.max_new_tokens),
                     "yes" if t.has_adapter else "no"])
    return rows


def backbone_rows(bb) -> list[list[str]]:
    """One row per task of backbone ``bb``, from the task folders it evaluates with (its own ``task_dirs``
    included: the micro suite's live in its build). A task YAML outside the shipped conventions (micro's read
    their data with lm-eval's own loader) is described from its lm-eval config."""
    from ..evaluation.tasks import list_tasks, task_manager

    manager = task_manager(bb.task_dirs)
    try:
        known = {t.name: t for t in list_tasks(manager=manager)}
    except ValueError:
        known = {}
    rows = []
    for short in bb.tasks:
        name = bb.lm_eval_task(short)
        if name in known:
            rows += [row for row in task_rows_of([known[name]])]
            continue
        entry = manager.task_index.get(name)
        if entry is None:
            raise ValueError(f"backbone {bb.name}: task {short} has no lm-eval task {name} under {manager.include_path}")
        cfg = entry.cfg or {}
        metrics = cfg.get("metric_list") or [{}]
        rows.append([name, str(cfg.get("dataset_path", "")), str(cfg.get("test_split", "")), "all",
                     str(metrics[0].get("metric", "")),
                     str((cfg.get("generation_kwargs") or {}).get("max_gen_toks", "")), "yes"])
    return rows


def task_table(suite: str | None = None) -> str:
    from tabulate import tabulate

    return tabulate(task_rows(suite), headers=HEADERS)


def run(args) -> int:
    suite = args.suite
    if args.backbone:
        from tabulate import tabulate

        from ..backbones import get_backbone

        bb = get_backbone(args.backbone)
        if suite and suite != bb.suite:
            raise ValueError(f"--suite {suite} contradicts --backbone {args.backbone} (suite {bb.suite})")
        print(tabulate(backbone_rows(bb), headers=HEADERS))
        return 0
    print(task_table(suite))
    return 0


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the benchmark tasks: dataset, split, sample size, metric")
    p.add_argument("--suite", help="only this suite (flan, llama, mistral, tiny); default: all")
    p.add_argument("--backbone", help="only the task variants of this backbone (e.g. mistral, tiny)")
    p.set_defaults(func=run)
