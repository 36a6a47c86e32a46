"""Seeded test-set sampling (protocol: seed 42; "bal k", "rand k", "all").

Decision (the protocol is silent on the mechanism): the seeded draw is a keyed hash ranking. Every
row gets a content key, the SHA-256 of its canonical JSON (sorted keys), and its rank is
SHA-256(f"{seed}:{content key}"). "rand k" keeps the k rows of smallest rank; "bal k" keeps, for
every label, the k rows of smallest rank within that label, with k capped at the size of the
smallest label class ("bal all" = exactly that cap); "all" keeps every row. The result is listed in
rank order. So a sample
- depends on the seed and on the rows' content only, never on the order a hub or a mirror lists them
  (a shuffled file gives the same documents in the same order),
- is a uniformly random subset for a fixed seed (SHA-256 as a random function),
- is stable when rows are added to a split: a row's rank never changes.
Rows with identical content tie; ties keep input order (they are the same document anyway).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Literal, Mapping, Sequence

SEED = 42

_SPEC = re.compile(r"^\s*(?:(all)|(rand|bal)\s+(all|\d+))\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SampleSpec:
    """How many test items a task keeps: kind "all", "rand" or "bal"; k None means "all"."""

    kind: Literal["all", "rand", "bal"]
    k: int | None = None

    @classmethod
    def parse(cls, text: "str | SampleSpec") -> "SampleSpec":
        """Parse "all", "rand 200", "bal 400" or "bal all"."""
        if isinstance(text, SampleSpec):
            return text
        found = _SPEC.match(str(text))
        if found is None:
            raise ValueError(f"sample spec {text!r}: expected 'all', 'rand <k>', 'bal <k>' or 'bal all'")
        if found.group(1):
            return cls("all")
        kind, k = found.group(2).lower(), found.group(3).lower()
        if k == "all":
            return cls(kind) if kind == "bal" else cls("all")
        if int(k) <= 0:
            raise ValueError(f"sample spec {text!r}: k must be positive")
        return cls(kind, int(k))  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind} {'all' if self.k is None else self.k}"


def content_key(row: Mapping[str, Any]) -> str:
    """SHA-256 of the row's canonical JSON (sorted keys, UTF-8, no whitespace)."""
    text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seeded_rank(key: str, seed: int = SEED) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def sample_indices(keys: Sequence[str], spec: "str | SampleSpec", labels: Sequence[Hashable] | None = None,
                   seed: int = SEED) -> list[int]:
    """Indices into ``keys`` (one content key per row) of the sampled rows, in rank order.

    ``labels`` (one per row) is required for "bal" and ignored otherwise.
    """
    spec = SampleSpec.parse(spec)
    order = sorted(range(len(keys)), key=lambda i: (seeded_rank(keys[i], seed), i))
    if spec.kind == "all":
        return order
    if spec.kind == "rand":
        return order[: spec.k]
    if labels is None or len(labels) != len(keys):
        raise ValueError(f"sample spec '{spec}' needs one label per row "
                         f"({len(keys)} rows, {None if labels is None else len(labels)} labels)")
    if not keys:
        return []
    sizes: dict[Hashable, int] = {}
    for label in labels:
        sizes[label] = sizes.get(label, 0) + 1
    per_label = min(sizes.values()) if spec.k is None else min(spec.k, min(sizes.values()))
    taken: dict[Hashable, int] = {}
    chosen = []
    for i in order:
        if taken.get(labels[i], 0) < per_label:
            taken[labels[i]] = taken.get(labels[i], 0) + 1
            chosen.append(i)
    return chosen


def sample_rows(rows: Sequence[Mapping[str, Any]], spec: "str | SampleSpec",
                labels: Sequence[Hashable] | None = None, seed: int = SEED) -> list[Mapping[str, Any]]:
    """The sampled rows themselves (see ``sample_indices``)."""
    return [rows[i] for i in sample_indices([content_key(r) for r in rows], spec, labels, seed)]


def sample_ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 of the sampled ids joined by newlines, in the given (sample) order."""
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise ValueError(f"sample ids must be strings, got {bad[:3]!r}")
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
