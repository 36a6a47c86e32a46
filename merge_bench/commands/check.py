"""``merge-bench check``: rerun the embedded suite (or a baseline) and fail on any moved score."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from ..leaderboard import DEFAULT_TOLERANCE, run_check
    from ..leaderboard.check_v2 import is_v2_entry, run_check_v2

    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    paths = [Path(p) for p in args.baseline or []]
    v2 = [p for p in paths if p.is_file() and is_v2_entry(p)]
    if v2:
        if len(v2) != len(paths):
            raise ValueError("give either protocol-v2 entry files or v1 baselines to one check, not both")
        if args.methods:
            v2 = [p for p in v2 if p.stem in args.methods or p.stem.split("[")[0] in args.methods]
        report = run_check_v2(v2, tolerance=tolerance, device=args.device, out=Path(args.out) if args.out else None,
                              batch_size=args.batch_size)
        print(report.render())
        return 0 if report.ok else 1
    report = run_check(
        [Path(p) for p in args.baseline] if args.baseline else None,
        tolerance=tolerance,
        backbone=args.backbone, methods=args.methods, device=args.device, out=Path(args.out) if args.out else None,
        batch_size=args.batch_size,
    )
    print(report.render())
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser("check", help="rerun a baseline (default: the leaderboard's embedded-suite entries) and compare")
    p.add_argument("--baseline", nargs="+", metavar="PATH",
                   help="leaderboard directory, entry files or a run record (default: the repository's v1 entries); "
                        "protocol-v2 entry files (leaderboard/v2/...) rerun their sweep and compare items too")
    p.add_argument("--tolerance", type=float,
                   help="allowed move in score points, 0–100 scale (default: leaderboard.check.DEFAULT_TOLERANCE)")
    p.add_argument("--backbone", default="tiny", help="only this backbone (default tiny)")
    p.add_argument("--methods", nargs="+", help="only these methods (names or method keys)")
    p.add_argument("--device", help="run on this device instead of the baseline's")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the baseline's)")
    p.add_argument("--out", help="run output directory (default: run's own)")
    p.set_defaults(func=run)
