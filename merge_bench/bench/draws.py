"""Task draws of protocol v2 (protocol.md, "Task draws"): seeded permutations of a pool, nested prefixes.

The set of size N in draw d is the first N tasks of permutation d, so sets are nested in N and every method
sees the same sets (paired). Small cases use all subsets instead; the full pool is always one draw.

Decisions: the pool is sorted (and must be free of duplicates) before shuffling, so the draws depend on the
set of task names, not on the order a config lists them in. Draw d uses its own generator
``numpy.random.default_rng([seed, d])``, so draw d is the same whatever the number of draws. The shuffle is an
explicit Fisher–Yates loop (it does not depend on ``random``'s internals). Integer draws may repeat a subset
when the pool is small; that is a draw like any other.
"""
from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Literal, Sequence

import numpy as np

MAX_ALL_SUBSETS = 15


def _pool(pool: Sequence[str]) -> list[str]:
    names = sorted(pool)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"the task pool must be non-empty and without duplicates, got {list(pool)}")
    return names


def fisher_yates(items: Sequence[str], rng: np.random.Generator) -> list[str]:
    """A uniform random permutation: for i = n−1 … 1 swap item i with a uniform j in [0, i]."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = int(rng.integers(0, i + 1))
        out[i], out[j] = out[j], out[i]
    return out


def permutations(pool: Sequence[str], draws: int, seed: int) -> list[list[str]]:
    """``draws`` seeded permutations of the (sorted) pool; permutation d comes from default_rng([seed, d])."""
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    names = _pool(pool)
    return [fisher_yates(names, np.random.default_rng([seed, d])) for d in range(draws)]


def task_sets(pool: Sequence[str], sizes: Sequence[int], draws: int | Literal["all"],
              seed: int) -> dict[int, list[list[str]]]:
    """Size N -> the task sets of that size, one per draw.

    Integer ``draws``: set d is the first N tasks of permutation d (a prefix of set d at any larger N).
    ``"all"``: every N-subset of the sorted pool (sorted, in lexicographic order) when C(pool, N) ≤ 15, else
    ValueError. N = len(pool) is one draw, the sorted pool.
    """
    names = _pool(pool)
    bad = [n for n in sizes if not isinstance(n, int) or not 1 <= n <= len(names)]
    if bad:
        raise ValueError(f"set sizes must lie in 1..{len(names)}, got {bad}")
    if draws != "all" and (not isinstance(draws, int) or draws < 1):
        raise ValueError(f"draws must be a positive integer or 'all', got {draws!r}")
    perms = permutations(names, draws, seed) if draws != "all" else []
    out: dict[int, list[list[str]]] = {}
    for n in sizes:
        if n == len(names):
            out[n] = [names]
        elif draws == "all":
            if comb(len(names), n) > MAX_ALL_SUBSETS:
                raise ValueError(f"'all' subsets of size {n} from {len(names)} tasks would be {comb(len(names), n)} "
                                 f"draws (more than {MAX_ALL_SUBSETS}): give a number of draws instead")
            out[n] = [list(c) for c in combinations(names, n)]
        else:
            out[n] = [p[:n] for p in perms]
    return out
