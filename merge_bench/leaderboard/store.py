"""Where entries live on disk, and atomic reads and writes.

Layout: ``<root>/v1/<backbone>/<task-set id>/<method key>.json``. A method key such as
``star[eta=20]`` is used as the file name as is when it only has portable characters; otherwise the
unsafe characters become ``_`` and a short hash of the key keeps distinct keys distinct.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import merge_bench

from ..io.files import atomic_write_text
from .schema import LEADERBOARD_VERSION, Entry

_SAFE = re.compile(r"[^A-Za-z0-9._,=+\[\]-]")
SCHEMA_FILE = "entry.schema.json"


def default_root() -> Path:
    """The repository's ``leaderboard/`` in a source checkout, else ``./leaderboard``."""
    repo_board = Path(merge_bench.__file__).resolve().parent.parent / "leaderboard"
    return repo_board if repo_board.is_dir() else Path.cwd() / "leaderboard"


def task_set_id(tasks: list[str] | tuple[str, ...] | set[str]) -> str:
    """``n<K>-<8 hex>``: the size, then a hash of the sorted, comma-joined task names.

    Always a hash, never ``all``: a backbone's full task list can grow (tasks get adapters), and
    the id of a published result must not change meaning when it does.
    """
    names = sorted(set(tasks))
    if not names:
        raise ValueError("a task set needs at least one task")
    digest = hashlib.sha256(",".join(names).encode("utf-8")).hexdigest()[:8]
    return f"n{len(names)}-{digest}"


def entry_filename(method_key: str) -> str:
    safe = _SAFE.sub("_", method_key)
    if safe != method_key or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(method_key.encode('utf-8')).hexdigest()[:8]}"
    return f"{safe}.json"


def entry_relpath(backbone: str, task_set: str, method_key: str) -> Path:
    return Path(LEADERBOARD_VERSION) / backbone / task_set / entry_filename(method_key)


def entry_path(root: Path, entry: Entry) -> Path:
    return Path(root) / entry_relpath(entry.backbone, entry.task_set.id, entry.method.key)


def entry_files(root: Path) -> list[Path]:
    """Every entry file under ``root/v1``, sorted."""
    base = Path(root) / LEADERBOARD_VERSION
    return sorted(p for p in base.glob("*/*/*.json") if p.is_file()) if base.is_dir() else []


def write_entry(root: Path, entry: Entry) -> Path:
    path = entry_path(root, entry)
    atomic_write_text(path, entry.to_json())
    return path


def read_entry(path: Path) -> Entry:
    """Load one entry file; a clear ValueError if it is not a valid entry (see validate for all checks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"leaderboard entry {path} does not exist")
    try:
        return Entry.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not a valid leaderboard entry: {err}") from None


def load_entries(root: Path) -> list[Entry]:
    return [read_entry(p) for p in entry_files(root)]
