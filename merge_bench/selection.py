"""Exact k-th largest |x| over a stream of tensors, in two passes and O(2¹⁶) memory.

TIES global trim and KnOTS need one threshold per task over *all* of its matrices. Holding every
dense task vector of a 7B model at once costs tens of GB, so we stream: a non-negative float32's
bit pattern, read as int32, is monotonic in its value. Pass 1 histograms the high 15 bits, pass 2
the low 16 bits inside the one bucket that holds the k-th value. The result is exact.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


def _abs_bits(x: Tensor) -> Tensor:
    return x.detach().float().abs().reshape(-1).view(torch.int32).long()


def _pick(counts: Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest (1-based) and how many values above it precede it."""
    above = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])  # above[b] = #values in buckets ≥ b
    bucket = int((above >= k).nonzero().max())
    before = int(above[bucket] - counts[bucket])
    return bucket, before


def kth_largest_abs(chunks: Callable[[], Iterable[Tensor]], k: int) -> float:
    """The k-th largest |x| (1-based) over every element yielded by ``chunks()``.

    ``chunks`` is called twice (two passes), so it must yield the same tensors each time.
    k ≤ 0 gives +inf (keep nothing); k above the element count gives 0 (keep everything).
    """
    if k <= 0:
        return float("inf")
    high = torch.zeros(1 << 15, dtype=torch.long)
    total = 0
    for x in chunks():
        bits = _abs_bits(x)
        total += bits.numel()
        high += torch.bincount(bits >> 16, minlength=1 << 15).cpu()
    if k > total:
        return 0.0
    bucket, before = _pick(high, k)
    low = torch.zeros(1 << 16, dtype=torch.long)
    for x in chunks():
        bits = _abs_bits(x)
        low += torch.bincount(bits[(bits >> 16) == bucket] & 0xFFFF, minlength=1 << 16).cpu()
    low_bucket, _ = _pick(low, k - before)
    pattern = torch.tensor([(bucket << 16) | low_bucket], dtype=torch.int32)
    return float(pattern.view(torch.float32))


def keep_top_fraction(x: Tensor, fraction: float) -> Tensor:
    """Boolean mask of the ⌊numel·fraction⌋ largest |x| (ties at the threshold kept)."""
    k = int(x.numel() * fraction)
    thr = kth_largest_abs(lambda: [x], k)
    return x.abs() >= thr
