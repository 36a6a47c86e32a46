"""Content-addressed cache of evaluation results: one small JSON file per (model variant, task).

The key hashes everything that determines a score (base and adapter hashes, method, params and the
hash of the merge code, task version and sampled ids, backend, limit), so a rerun or an extended run
recomputes nothing already done, and a killed run resumes where it stopped. Files are written atomically.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..io.files import atomic_write_bytes, content_hash, write_json_atomic


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

    # What the model wrote, item by item, beside the result: gzipped JSON lines (kept out of the small JSON
    # file, which every run reads back).
    def put_samples(self, key: dict, samples: list[dict]) -> None:
        text = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
        atomic_write_bytes(self._path(key).with_suffix(".samples.jsonl.gz"), gzip.compress(text.encode(), mtime=0))

    def get_samples(self, key: dict) -> list[dict] | None:
        path = self._path(key).with_suffix(".samples.jsonl.gz")
        if not path.is_file():
            return None
        return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
