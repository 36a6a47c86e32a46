"""``merge-bench compare A B``: the paired A − B of two run records or two leaderboard entries, nothing rerun."""
from __future__ import annotations

import json
from pathlib import Path


def load_side(path: Path):
    """A run record or sweep record (``record_version``), or a leaderboard entry (validated with its items)."""
    from ..bench.compare import from_entry, from_record

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a run record or a leaderboard entry file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (a run record or a leaderboard entry)")
    if "entry_sha256" in data:
        from ..leaderboard.validate import check_entry

        parents = path.resolve().parents
        if len(parents) < 5:
            raise ValueError(f"{path}: a leaderboard entry lives at <root>/v2/<backbone>/<track>/<set>/<method>.json")
        loaded, problems = check_entry(path, parents[4])
        if loaded is None:
            raise ValueError(f"{path}: not a valid entry:\n  " + "\n  ".join(map(str, problems)))
        return from_entry(loaded, str(path))
    return from_record(data, str(path))


def run(args) -> int:
    from ..bench.compare import compare, render

    result = compare(load_side(Path(args.a)), load_side(Path(args.b)), B=args.bootstrap)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="paired A − B of two run records or two leaderboard entries on the same items")
    p.add_argument("a", help="a run record (merge-bench run) or a leaderboard entry file")
    p.add_argument("b", help="the same kind of file, scored on the same items")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="B", help="bootstrap replicates (default 2000)")
    p.add_argument("--json", action="store_true", help="print the differences and row means as JSON")
    p.set_defaults(func=run)
