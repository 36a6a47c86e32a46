"""``merge-bench data export --suite S --to DIR``: fill an offline dataset mirror from the hub."""
from __future__ import annotations

from pathlib import Path


def run_export(args) -> int:
    from ..evaluation.data import DATA_DIR_ENV, export_mirror

    written = export_mirror(None if args.suite == "all" else args.suite, Path(args.to))
    for path in written:
        print(path)
    print(f"{len(written)} file(s); use them with {DATA_DIR_ENV}={Path(args.to).resolve()}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="offline dataset mirrors")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    export = data_sub.add_parser("export", help="download a suite's test splits into a mirror folder")
    export.add_argument("--suite", required=True, help="flan, llama, mistral, or all")
    export.add_argument("--to", required=True, help="mirror root: <DIR>/<dataset>/<config>/<split>.jsonl")
    export.set_defaults(func=run_export)
