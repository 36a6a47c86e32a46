"""Exact k-th largest |x| over a stream of tensors, in two passes and O(2¹⁶) memory per stream.

TIES global trim and KnOTS need one threshold per task over *all* of its matrices. Holding every
dense task vector of a 7B model at once costs tens of GB, so we stream: a non-negative float32's
bit pattern, read as int32, is monotonic in its value. Pass 1 histograms the high 15 bits, pass 2
the low 16 bits inside the one bucket that holds the k-th value. The result is exact.

Speed: the bits are taken with an integer AND (``|x|`` is the float with its sign bit cleared), and
every tensor is processed in cache-sized pieces (``PIECE``), so the per-element temporaries stay in
the CPU cache instead of being fresh multi-MB allocations. ``kth_largest_abs_many`` selects for
several streams (one per task) in the same two passes, so a caller densifies each matrix of each
task twice in all instead of twice per task.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

HIGH = 1 << 15  # buckets of pass 1: sign-cleared bits >> 16
LOW = 1 << 16  # bins of pass 2: the low 16 bits inside the chosen bucket
ABS_MASK = 0x7FFFFFFF
# Elements per piece: 4 bytes × 2¹⁸ = 1 MiB, so the few int32 temporaries of a piece stay in cache.
PIECE = 1 << 18


def _abs_bits(x: Tensor) -> Tensor:
    """The bit patterns of |x| as int32 (flat); float32 input is viewed, not converted."""
    flat = x.detach().reshape(-1)
    if flat.dtype != torch.float32:
        flat = flat.float()
    return flat.view(torch.int32) & ABS_MASK


def _pieces(x: Tensor) -> Iterable[Tensor]:
    flat = x.reshape(-1)
    return flat.split(PIECE) if flat.numel() > PIECE else (flat,)


def _pick(counts: Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest (1-based) and how many values above it precede it."""
    above = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])  # above[b] = #values in buckets ≥ b
    bucket = int((above >= k).nonzero().max())
    before = int(above[bucket] - counts[bucket])
    return bucket, before


def kth_largest_abs_many(chunks: Callable[[], Iterable[tuple[int, Tensor]]], ks: Sequence[int]) -> list[float]:
    """For each stream s, the ks[s]-th largest |x| (1-based) over the tensors tagged s by ``chunks()``.

    ``chunks`` yields (stream index, tensor) pairs and is called twice (two passes), so it must
    yield the same tensors each time. Per stream, k ≤ 0 gives +inf (keep nothing) and k above its
    element count gives 0 (keep everything). Memory: a 2¹⁵ and a 2¹⁶ counter array per stream.
    """
    n = len(ks)
    result: list[float | None] = [float("inf") if k <= 0 else None for k in ks]
    if all(r is not None for r in result):
        return [float(r) for r in result]  # type: ignore[arg-type]
    high = torch.zeros(n, HIGH, dtype=torch.long)
    for s, x in chunks():
        if result[s] is not None:
            continue
        for piece in _pieces(x):
            high[s] += torch.bincount(_abs_bits(piece).bitwise_right_shift_(16).cpu(), minlength=HIGH)
    buckets: dict[int, tuple[int, int]] = {}
    for s, k in enumerate(ks):
        if result[s] is not None:
            continue
        if k > int(high[s].sum()):
            result[s] = 0.0
        else:
            buckets[s] = _pick(high[s], k)
    if buckets:
        low = torch.zeros(n, LOW, dtype=torch.long)
        for s, x in chunks():
            if s not in buckets:
                continue
            start = buckets[s][0] << 16
            for piece in _pieces(x):
                # Offsets into the bucket, with everything outside clamped to the two extra end bins
                # (arithmetic only: a boolean mask and a masked select cost several times more).
                offset = _abs_bits(piece).sub_(start - 1).clamp_(0, LOW + 1)
                low[s] += torch.bincount(offset.cpu(), minlength=LOW + 2)[1:LOW + 1]
        for s, (bucket, before) in buckets.items():
            low_bucket, _ = _pick(low[s], ks[s] - before)
            pattern = torch.tensor([(bucket << 16) | low_bucket], dtype=torch.int32)
            result[s] = float(pattern.view(torch.float32))
    return [float(r) for r in result]  # type: ignore[arg-type]


def kth_largest_abs(chunks: Callable[[], Iterable[Tensor]], k: int) -> float:
    """The k-th largest |x| (1-based) over every element yielded by ``chunks()``.

    ``chunks`` is called twice (two passes), so it must yield the same tensors each time.
    k ≤ 0 gives +inf (keep nothing); k above the element count gives 0 (keep everything).
    """
    if k <= 0:
        return float("inf")
    return kth_largest_abs_many(lambda: ((0, x) for x in chunks()), [k])[0]


def keep_top_fraction(x: Tensor, fraction: float) -> Tensor:
    """Boolean mask of the ⌊numel·fraction⌋ largest |x| (ties at the threshold kept)."""
    k = int(x.numel() * fraction)
    thr = kth_largest_abs(lambda: [x], k)
    return x.abs() >= thr
