"""Content-addressed cache of evaluation results: one small JSON file per (model variant, task).

The key hashes everything that determines a score (base and adapter hashes, method, params and the
hash of the merge code, task version and sampled ids, backend, limit), so a rerun or an extended run
recomputes nothing already done, and a killed run resumes where it stopped. Files are written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .io import atomic_write_text, sha256_file


def cache_root() -> Path:
    """``$MERGE_BENCH_CACHE``, default ``~/.cache/merge-bench``: converted models, results, micro builds."""
    return Path(os.environ.get("MERGE_BENCH_CACHE", Path.home() / ".cache" / "merge-bench"))


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# Files that describe a local copy rather than the model: the tiny base's conversion manifest
# records file mtimes, so hashing it would give every machine (and every re-verification) its own
# "base", and their leaderboard entries could never share reference rows.
LOCAL_FILES = frozenset({"merge_bench_manifest.json"})


def dir_sha256(path: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.json")) -> str:
    """A stable hash over a model or adapter directory's weight and config files (content only)."""
    path = Path(path)
    files = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file() and p.name not in LOCAL_FILES})
    if not files:
        raise FileNotFoundError(f"{path} holds no model files (looked for {', '.join(patterns)})")
    return content_hash({p.name: sha256_file(p) for p in files})


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: dict) -> Path:
        digest = content_hash(key)
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, key: dict) -> dict | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return json.loads(path.read_text())["value"]

    def put(self, key: dict, value: dict) -> None:
        write_json_atomic(self._path(key), {"key": key, "value": value})
