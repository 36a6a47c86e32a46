"""``merge-bench leaderboard build | validate | show``."""
from __future__ import annotations

import sys
from pathlib import Path


def _root(args) -> Path:
    from ..leaderboard import default_root

    return Path(args.root) if args.root else default_root()


def run_build(args) -> int:
    from ..leaderboard import build_leaderboard

    written = build_leaderboard(_root(args))
    print(f"leaderboard build: wrote {len(written)} file(s) under {_root(args)}")
    return 0


def run_validate(args) -> int:
    from ..leaderboard import validate_leaderboard

    entries, problems = validate_leaderboard(_root(args))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"leaderboard validate: {len(problems)} problem(s) in {_root(args)}", file=sys.stderr)
        return 1
    print(f"leaderboard validate: {len(entries)} entries OK under {_root(args)}")
    return 0


def run_show(args) -> int:
    from ..leaderboard import show_text, validate_leaderboard

    entries, problems = validate_leaderboard(_root(args))
    if problems:
        print(f"warning: {len(problems)} problem(s); run `merge-bench leaderboard validate`", file=sys.stderr)
    print(show_text(entries, backbone=args.backbone, task_set=args.task_set))
    return 0


def register(sub) -> None:
    p = sub.add_parser("leaderboard", help="build, validate or show the leaderboard")
    actions = p.add_subparsers(dest="action", required=True)
    for name, func, help_text in (
        ("build", run_build, "regenerate README.md, index.html, plots and the JSON Schema from the entries"),
        ("validate", run_validate,
         "check every entry (schema, hash, scores, method, references); exit 1 on any problem"),
        ("show", run_show, "print the leaderboard tables"),
    ):
        q = actions.add_parser(name, help=help_text)
        q.add_argument("--root", help="leaderboard directory (default: the repository's leaderboard/)")
        if name == "show":
            q.add_argument("--backbone", help="only this backbone")
            q.add_argument("--task-set", help="only this task-set id (e.g. n3-1a2b3c4d)")
        q.set_defaults(func=func)
