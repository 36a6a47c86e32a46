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

    loaded, problems = validate_leaderboard(_root(args))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"leaderboard validate: {len(problems)} problem(s) in {_root(args)}", file=sys.stderr)
        return 1
    if not loaded:
        raise ValueError(f"no leaderboard entries under {_root(args)}; expected entry files such as "
                         "v2/<backbone>/<track>/<set>/<method>.json (is --root the leaderboard folder?)")
    print(f"leaderboard validate: {len(loaded)} entries OK under {_root(args)}")
    return 0


def run_show(args) -> int:
    import json

    from ..leaderboard import validate_leaderboard
    from ..leaderboard.groups import group_stats, show_rows
    from ..leaderboard.tracks import add_vs_default, compare_tracks
    from ..leaderboard.views import show_csv, show_text, show_text_tracks

    loaded, problems = validate_leaderboard(_root(args))
    if problems:
        print(f"warning: {len(problems)} problem(s); run `merge-bench leaderboard validate`", file=sys.stderr)
    known = sorted({e.entry.backbone for e in loaded})
    if args.backbone is not None and args.backbone not in known:
        raise ValueError(f"--backbone {args.backbone}: no leaderboard entries under {_root(args)}; expected one of "
                         f"{', '.join(known) or 'none (the leaderboard is empty)'}")
    groups = [g for g in group_stats(loaded, backbone=args.backbone)
              if args.track is None or g.track == args.track]
    # a comparison joins both tracks, so one asked for alone shows none
    comparisons = compare_tracks(loaded, groups) if args.track is None else []
    if args.json or args.csv:
        rows = add_vs_default(show_rows(groups), comparisons)
        print(json.dumps(rows, indent=2) if args.json else show_csv(rows), end="\n" if args.json else "")
        return 0
    if groups:
        print("Mean over task draws, 95 % bootstrap CIs\n\n" + show_text(groups) + "\n")
    if comparisons:
        print("Tuned vs default (paired Δ = tuned − default on the same draws and items)\n\n"
              + show_text_tracks(comparisons) + "\n")
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
            q.add_argument("--track", choices=("default", "tuned"), help="only this protocol-v2 track")
            fmt = q.add_mutually_exclusive_group()
            fmt.add_argument("--json", action="store_true",
                             help="print the rows as JSON: per (backbone, track, N) each method, then the pretrained "
                                  "and LoRA rows, with per-task scores and Wilson intervals, the normalized score "
                                  "and the retained gain with CIs (shape: leaderboard/README.md)")
            fmt.add_argument("--csv", action="store_true",
                             help="print the same rows as CSV, one line per row, draw and task")
        q.set_defaults(func=func)
