"""``merge-bench check``: rerun leaderboard entries and fail on any moved score or changed item."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from ..leaderboard.check import DEFAULT_TOLERANCE, baseline_files, run_check

    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    paths = baseline_files([Path(p) for p in args.baseline] if args.baseline else None,
                           backbone=None if args.baseline else args.backbone)
    if args.methods:
        paths = [p for p in paths if p.stem in args.methods or p.stem.split("[")[0] in args.methods]
        if not paths:
            raise ValueError(f"--methods {' '.join(args.methods)}: none of the baseline's entries is of these methods")
    report = run_check(paths, tolerance=tolerance, device=args.device, out=Path(args.out) if args.out else None,
                       batch_size=args.batch_size)
    print(report.render())
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser("check", help="rerun leaderboard entries (default: the repository's, of --backbone) and compare")
    p.add_argument("--baseline", nargs="+", metavar="PATH",
                   help="entry files or leaderboard folders (every entry under them); each folder's entries rerun "
                        "as one sweep, compared number by number and item by item")
    p.add_argument("--tolerance", type=float,
                   # the number of leaderboard.check.DEFAULT_TOLERANCE, stated here so --help imports no leaderboard
                   # (a test keeps the two equal)
                   help="allowed move in score points, 0–100 scale (default: 0.5, one item of a 200-item task)")
    p.add_argument("--backbone", default="tiny", help="without --baseline: this backbone's entries (default tiny)")
    p.add_argument("--methods", nargs="+", help="only these methods (names or method keys)")
    p.add_argument("--device", help="run on this device instead of the baseline's")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the baseline's)")
    p.add_argument("--out", help="run output directory (default: run's own)")
    p.set_defaults(func=run)
