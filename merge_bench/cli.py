"""The ``merge-bench`` command: a thin argparse layer over library functions.

Each subcommand lives in ``merge_bench/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a handler taking the parsed args and returning an exit
code. Library errors (ValueError, FileNotFoundError) become one clear line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("merge", "methods", "tasks", "data", "run", "leaderboard", "submit", "check")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merge-bench", description="Merge LoRA experts and benchmark merge methods.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"merge_bench.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"merge_bench.commands.{name}":
                continue  # a subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads spin by default; on a small shared CPU that costs up to 10× (measured in
    # scripts/bench_merge.py). Must be set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"merge-bench {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
