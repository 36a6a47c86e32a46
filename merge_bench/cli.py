"""The ``merge-bench`` command: a thin argparse layer over library functions.

Each subcommand lives in ``merge_bench/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a handler taking the parsed args and returning an exit
code. Library errors (ValueError, FileNotFoundError) become one clear line on stderr and exit 2; any other
exception one line naming its type, exit 1. ``--verbose`` (or ``MERGE_BENCH_TRACEBACK=1``) shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("merge", "methods", "tasks", "data", "run", "leaderboard", "submit", "check", "compare", "samples")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="merge-bench", description="Merge LoRA experts and benchmark merge methods.")
    parser.add_argument("--version", action="version", version=f"merge-bench {__version__}")
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
    verbose = bool(getattr(args, "verbose", False)) or os.environ.get("MERGE_BENCH_TRACEBACK") == "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"merge-bench {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as err:
        if verbose:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"merge-bench {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 (a library's own error: one line, the traceback on request)
        if verbose:
            raise
        hint = "rerun with --verbose" if hasattr(args, "verbose") else "set MERGE_BENCH_TRACEBACK=1"
        print(f"merge-bench {args.command}: error: {type(err).__name__}: {one_line(str(err))} "
              f"({hint} for the traceback)", file=sys.stderr)
        return 1


def one_line(text: str) -> str:
    """A message's first non-empty line (a library's multi-line error would break the one-line rule)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip() or "no detail")


if __name__ == "__main__":
    sys.exit(main())
