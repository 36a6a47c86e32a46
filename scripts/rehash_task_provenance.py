"""Recompute every leaderboard entry's task hashes (``provenance.tasks[*].yaml_sha256``) with today's task
identity (``evaluation.harness.task_sha256``: config without paths, scored documents, hook sources), reseal
the entries (``entry_sha256``) and leave everything else as it is.

Run it after a change to how a task is identified, or to a task's hooks: the numbers do not move, only the
hashes that say which task definition produced them. An entry whose recorded documents (``n``,
``sample_ids_sha256``) differ from what the task yields today is an error naming it: its numbers would
belong to other items, and a new hash would hide that.

    python scripts/rehash_task_provenance.py [--root leaderboard] [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from merge_bench.backbones import get_backbone
from merge_bench.evaluation.harness import describe_tasks
from merge_bench.evaluation.tasks import task_manager
from merge_bench.io.files import atomic_write_text
from merge_bench.leaderboard import default_root
from merge_bench.leaderboard.schema import content_sha256


def entry_files(root: Path) -> list[Path]:
    """Every entry: a JSON file holding ``provenance.tasks`` (not the per-item files or the schemas)."""
    out = []
    for path in sorted(root.rglob("*.json")):
        if "items" in path.relative_to(root).parts or path.name.endswith(".schema.json"):
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("provenance"), dict) and "tasks" in data["provenance"]:
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="leaderboard folder (default: the repository's)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any hash is stale")
    args = parser.parse_args(argv)
    root = args.root or default_root()
    infos: dict[str, dict] = {}  # backbone -> short -> TaskInfo
    stale, errors = [], []
    for path in entry_files(root):
        data = json.loads(path.read_text())
        backbone = data["backbone"] if isinstance(data["backbone"], str) else data["backbone"]["name"]
        tasks = data["provenance"]["tasks"]
        known = infos.setdefault(backbone, {})
        missing = [t for t in tasks if t not in known]
        if missing:
            bb = get_backbone(backbone)
            known.update(describe_tasks(bb, missing, task_manager(bb.task_dirs), None))
        changed = False
        for short, recorded in tasks.items():
            now = known[short]
            if (recorded["n"], recorded["sample_ids_sha256"]) != (now.n, now.sample_ids_sha256):
                errors.append(f"{path}: task {short}: recorded {recorded['n']} items "
                              f"({recorded['sample_ids_sha256'][:12]}), the task yields {now.n} "
                              f"({now.sample_ids_sha256[:12]}); expected the same documents")
                continue
            if recorded.get("yaml_sha256") != now.yaml_sha256:
                recorded["yaml_sha256"] = now.yaml_sha256
                changed = True
        if changed:
            stale.append(path)
            if not args.check:
                data["entry_sha256"] = content_sha256(data)
                atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for error in errors:
        print(error, file=sys.stderr)
    verb = "stale" if args.check else "rehashed"
    print(f"{len(stale)} entr{'y' if len(stale) == 1 else 'ies'} {verb} under {root}")
    return 1 if errors or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
