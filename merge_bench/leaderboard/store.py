"""Where entries live on disk, and atomic writes.

Layout: ``<root>/v2/<backbone>/<track>/<draw-set id>/`` holds one ``<method key>.json`` per method, plus the
per-item scores the statistics are computed from: ``items/reference.json`` (the pretrained and LoRA rows of every
task of the draws, shared by the folder) and ``items/methods/<method key>.json`` (the method's rows per draw).
A method key such as ``star[eta=20]`` is used as the file name as is when it only has portable characters;
otherwise the unsafe characters become ``_`` and a short hash of the key keeps distinct keys distinct.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import merge_bench

from ..io.files import atomic_write_text
from .schema import LEADERBOARD_VERSION, Entry

_SAFE = re.compile(r"[^A-Za-z0-9._,=+\[\]-]")
SCHEMA_FILE = "entry.schema.json"
REFERENCE_ITEMS = "items/reference.json"


def default_root() -> Path:
    """The repository's ``leaderboard/`` in a source checkout, else ``./leaderboard``."""
    repo_board = Path(merge_bench.__file__).resolve().parent.parent / "leaderboard"
    return repo_board if repo_board.is_dir() else Path.cwd() / "leaderboard"


def entry_filename(method_key: str) -> str:
    safe = _SAFE.sub("_", method_key)
    if safe != method_key or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(method_key.encode('utf-8')).hexdigest()[:8]}"
    return f"{safe}.json"


def draw_set_id(n: int, draws: list[list[str]]) -> str:
    """``n<N>-d<D>-<8 hex>``: the size, the number of draws, a hash of the draws' sorted task lists in order."""
    text = "|".join(",".join(sorted(d)) for d in draws)
    return f"n{n}-d{len(draws)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def folder(root: Path, entry: Entry) -> Path:
    return Path(root) / LEADERBOARD_VERSION / entry.backbone / entry.track / entry.draw_set.id


def entry_path(root: Path, entry: Entry) -> Path:
    return folder(root, entry) / entry_filename(entry.method.key)


def method_items_path(key: str) -> str:
    return f"items/methods/{entry_filename(key)}"


def entry_files(root: Path) -> list[Path]:
    """Every entry file under ``root/v2``, sorted."""
    base = Path(root) / LEADERBOARD_VERSION
    return sorted(p for p in base.glob("*/*/*/*.json") if p.is_file()) if base.is_dir() else []


@dataclass(frozen=True)
class NewEntry:
    """An entry with the per-item files it pins (their JSON text, as written)."""

    entry: Entry
    method_items: str
    reference_items: str


def write_new(root: Path, new: NewEntry) -> Path:
    """Write an entry and its items; refuses a folder whose reference items differ (another stack)."""
    where = folder(root, new.entry)
    ref = where / REFERENCE_ITEMS
    if ref.exists() and ref.read_text(encoding="utf-8") != new.reference_items:
        raise ValueError(f"{ref} holds other pretrained/LoRA per-item scores than this run: the entries of one "
                         "folder share their reference rows (run `merge-bench check` to see where the stack differs)")
    atomic_write_text(ref, new.reference_items)
    atomic_write_text(where / new.entry.items.method.path, new.method_items)
    path = entry_path(root, new.entry)
    atomic_write_text(path, new.entry.to_json())
    return path
