"""Elementwise building blocks shared by TIES-style methods (ties, dare, breadcrumbs, knots, drm).

Memory: everything here works on one weight matrix at a time. The streaming helpers
(``ties_combine``, ``ties_merge_rows``, ``global_thresholds``) rebuild a task's dense matrix on
demand instead of stacking all N of them, so they hold a few n×m float32 buffers (or, row-blocked,
a few cache-sized blocks) whatever the number of tasks.

Speed: a dense n×m temporary of a 4096×4096 matrix is a fresh 64 MiB allocation whose page faults
cost more than the arithmetic. The row-blocked helpers (``TaskRows``, ``row_slices``) build each
task's τ a block of rows at a time (B[rows]·A for a LoRA) into reused buffers that stay in cache.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..delta import Delta, LowRank
from ..numerics import COMPUTE_DTYPE
from ..selection import kth_largest_abs, kth_largest_abs_many
from .base import ModuleStream

# Elements per chunk handed to kth_largest_abs (it splits further into cache-sized pieces).
CHUNK = 1 << 22

# Elements of one task's row block: 1 MiB of float32, so the N blocks of one step (plus a few
# accumulators) stay in the CPU cache while every task is visited.
BLOCK = 1 << 18

# (task index, matrix key, that task's delta) -> the dense float32 matrix to trim.
TaskTransform = Callable[[int, str, Delta], Tensor]
# (task index, matrix key, that task's delta) -> the pieces (any shapes) of the matrix to trim.
TaskPieces = Callable[[int, str, Delta], Iterable[Tensor]]


def rows_per_block(m: int, block: int | None = None) -> int:
    """Rows of length m in one block of about ``block`` (default ``BLOCK``) elements; at least 1."""
    return max(1, (BLOCK if block is None else block) // max(m, 1))


def row_slices(n: int, m: int, block: int | None = None) -> list[slice]:
    """Consecutive row ranges of an n×m matrix, each of about ``block`` (default ``BLOCK``) elements
    (at least one row)."""
    step = rows_per_block(m, block)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


class TaskRows:
    """One task's dense float32 τ, built a block of rows at a time.

    For a LoRA the factors are cast to float32 once, then rows are B[rows]·A (the same float32
    product as ``dense32``, a block at a time); dense inputs are sliced and cast.
    """

    def __init__(self, d: Delta) -> None:
        self.shape = tuple(d.shape)
        self._device = d.B.device if isinstance(d, LowRank) else d.device
        if isinstance(d, LowRank):
            self.B: Tensor | None = d.B.to(COMPUTE_DTYPE)
            self.A = d.A.to(COMPUTE_DTYPE)
        else:
            self.B, self.M = None, d

    def rows(self, rows: slice, out: Tensor | None = None) -> Tensor:
        """τ[rows] as float32, written into ``out`` (a contiguous buffer of that shape) when given."""
        if self.B is not None:
            return self.B[rows] @ self.A if out is None else torch.matmul(self.B[rows], self.A, out=out)
        x = self.M[rows]
        if out is None:
            return x.to(COMPUTE_DTYPE)
        return out.copy_(x)

    def blocks(self, reuse: bool = False) -> Iterator[Tensor]:
        """Every row block of τ in order: fresh tensors, or (``reuse``) views of one buffer that
        the next block overwrites, for a consumer that is done with each block before the next."""
        n, m = self.shape
        size = min(n, rows_per_block(m)) * m
        buf = torch.empty(size, dtype=COMPUTE_DTYPE, device=self._device) if reuse else None
        for rows in row_slices(n, m):
            out = None if buf is None else buf[:(rows.stop - rows.start) * m].view(-1, m)
            yield self.rows(rows, out)


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


def below(threshold: float) -> float:
    """The largest float32 strictly below a non-negative float32 ``threshold`` (−1 for 0).

    For float32 x, |x| > below(thr) ⇔ |x| ≥ thr: no float32 lies between the two.
    """
    if threshold <= 0.0:
        return -1.0
    bits = torch.tensor([threshold], dtype=torch.float32).view(torch.int32) - 1
    return float(bits.view(torch.float32))


def trim_(x: Tensor, threshold: float) -> Tensor:
    """``trim`` in place on a float32 tensor: the same numbers.

    Why hardshrink: it zeroes |x| ≤ λ in one vectorized float pass, where a boolean mask costs
    several times more on CPU (bool outputs and masked_fill are slow paths); λ = ``below(thr)``
    makes ≤ λ the same as < thr.
    """
    return torch.hardshrink(x, below(threshold), out=x)


def global_thresholds(modules: ModuleStream, percent: float, transform: TaskTransform | None = None,
                      pieces: TaskPieces | None = None) -> list[float]:
    """Per task t, the ⌊numel_t·percent/100⌋-th largest |x| over all of t's targeted matrices.

    numel_t counts only the matrices task t targets (``is_zero`` is false): a task that leaves a
    matrix alone would otherwise get a larger keep budget for its real entries. The matrix of task
    t is ``transform(t, key, delta)``, or the concatenation of ``pieces(t, key, delta)`` (row
    blocks, say, which never hold a whole dense matrix). Streams the matrices three times (one
    count pass, then the two passes of the selection for all tasks together), densifying one
    matrix of one task at a time.
    """
    if (transform is None) == (pieces is None):
        raise ValueError("global_thresholds needs exactly one of transform and pieces")
    numel: list[int] = []
    for _, deltas in modules():
        if not numel:
            numel = [0] * len(deltas)
        if len(deltas) != len(numel):
            raise ValueError(f"module stream gave {len(deltas)} task deltas after {len(numel)} earlier")
        for t, d in enumerate(deltas):
            if not is_zero(d):
                numel[t] += math.prod(d.shape)

    def chunks() -> Iterator[tuple[int, Tensor]]:
        for key, deltas in modules():
            for t, d in enumerate(deltas):
                if is_zero(d):
                    continue
                parts = pieces(t, key, d) if pieces is not None else matrix_chunks(transform(t, key, d))
                for part in parts:
                    yield t, part

    return kth_largest_abs_many(chunks, [percent_count(n, percent) for n in numel])


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


# Writes task t's (trimmed) rows into ``out`` (shape len(rows) × m, float32) and returns it.
RowsInto = Callable[[int, slice, Tensor], Tensor]


def ties_merge_rows(task_rows: RowsInto, n_tasks: int, shape: tuple[int, int], device: torch.device) -> Tensor:
    """Sign election then disjoint mean over the row-blocked tasks: the numbers of ``ties_combine``.

    Per block of rows every task's block is built once into a buffer (cache-sized, see ``BLOCK``),
    summed in task order for the sign, then folded into the disjoint mean (``disjoint_mean_``).
    """
    if n_tasks < 1:
        raise ValueError("ties_merge_rows needs at least one task")
    n, m = shape
    out = torch.empty(shape, dtype=COMPUTE_DTYPE, device=device)
    buf = torch.empty((n_tasks, min(rows_per_block(m), n), m), dtype=COMPUTE_DTYPE, device=device)
    for rows in row_slices(n, m):
        xs = buf[:, :rows.stop - rows.start]
        for t in range(n_tasks):
            task_rows(t, rows, xs[t])
        out[rows] = disjoint_mean_(xs, torch.sign(stacked_sum(xs)))
    return out


def stacked_sum(Y: Tensor) -> Tensor:
    """Σ_t Y[t] over dim 0, accumulated in task order (a fresh tensor)."""
    total = Y[0].clone()
    for t in range(1, Y.shape[0]):
        total += Y[t]
    return total


def disjoint_mean_(Y: Tensor, sign: Tensor) -> Tensor:
    """``disjoint_mean(Y, sign)`` for a float32 stack Y (T × …), destroying Y.

    The agreeing entries are those with Y_t·s > 0; their mean is s·Σ_t max(Y_t·s, 0) / #agreeing
    (negation is exact), which costs in-place float ops only, where the boolean-mask form costs
    several stack-sized temporaries.
    """
    acc, count = torch.zeros_like(Y[0]), torch.zeros_like(Y[0])
    for t in range(Y.shape[0]):
        agree = Y[t].mul_(sign).clamp_(min=0)  # |Y_t| where its sign is the elected one, else 0
        acc += agree
        count += agree.sign_()
    mean = acc.div_(count.clamp(min=1)).mul_(sign)
    return torch.where(count > 0, mean, torch.zeros_like(mean))
