"""Elementwise building blocks shared by TIES-style methods (ties, dare, breadcrumbs, knots, drm).

Memory: everything here works on one weight matrix at a time. The streaming helpers
(``ties_combine``, ``global_thresholds``) rebuild a task's dense matrix on demand instead of
stacking all N of them, so they hold a few n×m float32 buffers whatever the number of tasks.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..delta import Delta, LowRank
from ..numerics import COMPUTE_DTYPE
from ..selection import kth_largest_abs
from .base import ModuleStream

# Elements per chunk handed to kth_largest_abs: its bit histogram makes an int64 copy of each chunk,
# so chunking bounds that temporary at 32 MiB whatever the matrix size.
CHUNK = 1 << 22

# (task index, matrix key, that task's delta) -> the dense float32 matrix to trim.
TaskTransform = Callable[[int, str, Delta], Tensor]


def elect_sign(stacked: Tensor) -> Tensor:
    """Per-entry sign of the sum over tasks (dim 0): +1, −1 or 0."""
    return torch.sign(stacked.sum(dim=0))


def disjoint_mean(stacked: Tensor, sign: Tensor) -> Tensor:
    """Per entry, the mean of the non-zero task entries whose sign equals ``sign``; 0 where none."""
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    total = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(dim=0)
    count = agree.sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def dense32(d: Delta) -> Tensor:
    """The dense float32 matrix of a delta. Factors are cast before the product, so bf16 LoRA
    factors are multiplied in float32 rather than rounded to bf16 after."""
    if isinstance(d, LowRank):
        return d.to(COMPUTE_DTYPE).dense()
    return d.to(COMPUTE_DTYPE)


def is_zero(d: Delta) -> bool:
    """True when the delta is identically zero, i.e. the task does not target this matrix.

    The engine hands such tasks a zero (a rank-0 ``LowRank`` or a zero tensor). A ``LowRank`` with a
    zero B or a zero A counts as zero too; one whose non-zero factors multiply to exactly zero is not
    detected (it would need the dense product) and merely counts as targeted.
    """
    if isinstance(d, LowRank):
        return d.rank == 0 or not bool(d.B.any()) or not bool(d.A.any())
    return not bool(d.any())


def count_of(total: int, fraction: float) -> int:
    """⌊total·fraction⌋ with ``fraction`` read as the decimal it was written as.

    Float products round: 100·0.29 is 28.999… in binary, which would floor to 28. Reading the
    fraction through its shortest decimal repr ("0.29") makes the floor exact, as a user expects.
    """
    if not math.isfinite(fraction):
        raise ValueError(f"fraction must be finite, got {fraction!r}")
    return math.floor(total * Fraction(repr(float(fraction))))


def percent_count(total: int, percent: float) -> int:
    """⌊total·percent/100⌋, exactly (see ``count_of``)."""
    return math.floor(total * Fraction(repr(float(percent))) / 100)


def matrix_chunks(x: Tensor) -> list[Tensor]:
    """Flat views of ``x`` in ``CHUNK``-sized pieces, for ``kth_largest_abs``."""
    return list(x.reshape(-1).split(CHUNK))


def local_threshold(x: Tensor, percent: float) -> float:
    """The ⌊numel·percent/100⌋-th largest |x| of one matrix (+inf when that count is 0)."""
    return kth_largest_abs(lambda: matrix_chunks(x), percent_count(x.numel(), percent))


def trim(x: Tensor, threshold: float) -> Tensor:
    """Keep entries with |x| ≥ threshold, zero the rest (ties at the threshold are kept)."""
    return torch.where(x.abs() >= threshold, x, torch.zeros_like(x))


def global_thresholds(modules: ModuleStream, percent: float, transform: TaskTransform) -> list[float]:
    """Per task t, the ⌊numel_t·percent/100⌋-th largest |x| over all of t's targeted matrices.

    numel_t counts only the matrices task t targets (``is_zero`` is false): a task that leaves a
    matrix alone would otherwise get a larger keep budget for its real entries. Streams the
    matrices 1 + 2N times (one count pass, then kth_largest_abs's two passes per task), densifying
    one matrix of one task at a time through ``transform``.
    """
    numel: list[int] = []
    for _, deltas in modules():
        if not numel:
            numel = [0] * len(deltas)
        if len(deltas) != len(numel):
            raise ValueError(f"module stream gave {len(deltas)} task deltas after {len(numel)} earlier")
        for t, d in enumerate(deltas):
            if not is_zero(d):
                numel[t] += math.prod(d.shape)

    def chunks(t: int) -> Iterator[Tensor]:
        for key, deltas in modules():
            if not is_zero(deltas[t]):
                yield from matrix_chunks(transform(t, key, deltas[t]))

    return [kth_largest_abs(lambda t=t: chunks(t), percent_count(n, percent)) for t, n in enumerate(numel)]


def ties_combine(task: Callable[[int], Tensor], n_tasks: int) -> Tensor:
    """Sign election then disjoint mean over the tensors ``task(0) … task(n_tasks − 1)``.

    The same numbers as ``disjoint_mean(stack, elect_sign(stack))`` without the N×n×m stack:
    pass 1 sums the tasks for the sign, pass 2 accumulates the agreeing entries and their count, so
    ``task`` is called twice per index and must return the same tensor both times.
    """
    if n_tasks < 1:
        raise ValueError("ties_combine needs at least one task")
    first = task(0)
    total = first.clone()
    for t in range(1, n_tasks):
        total += task(t)
    sign = torch.sign(total)
    total.zero_()
    count = torch.zeros(first.shape, dtype=torch.int32, device=first.device)
    for t in range(n_tasks):
        x = first if t == 0 else task(t)
        agree = (torch.sign(x) == sign) & (x != 0)
        total += torch.where(agree, x, torch.zeros_like(x))
        count += agree
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
