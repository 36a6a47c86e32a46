"""Shared linear algebra of the SVD-family methods (star, drm, knots, tsv, iso_c, iso_cts).

Every helper takes one weight matrix's task vectors. When all of them are ``LowRank`` the work is
exact in factor space (Gram-based spans of n×r or m×r factors, SVDs of cores of side ≤ Σ r_t,
products of n×k and k×m pieces with k ≤ Σ r_t); otherwise the same quantity is computed from
dense matrices. Results come back in ``SVD_DTYPE`` (float64); the methods cast what they return.

Core space. ``merge_factors`` runs a method's maths on LoRA inputs rewritten in orthonormal bases of
their joint column (and row) spaces (``reduce``): every task vector becomes a LowRank of side
≤ Σ r_t, so the SVDs, polar factors and QRs of the method cost nothing that grows with n or m, and
the result is lifted back with one n×R and one R×m product. This is exact for maths that commutes
with orthogonal changes of basis (sums, SVDs, polar factors); constants that depend on the ambient
shape are passed that shape, never the core's.

Numerical zeros. A float32 task vector B·A formed densely has rounding noise of order
eps32·‖τ‖ in its "zero" singular values, while its factor-space SVD has exact zeros. So that both
paths see the same rank, a singular value counts as non-zero only above
``scale · max(n, m) · eps32`` (NumPy's ``matrix_rank`` rule for float32 data); ``scale`` is the
largest singular value at hand unless a caller passes a larger reference (for residuals and sums
that may cancel).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from ..delta import Delta, LowRank, all_lowrank, padded_stack, span, svd, svds
from ..numerics import COMPUTE_DTYPE, SVD_DTYPE

EPS32 = torch.finfo(torch.float32).eps


def shape_of(deltas: list[Delta], key: str = "") -> tuple[int, int]:
    """The common n×m shape of one matrix's task vectors; ValueError if they disagree."""
    where = f" for matrix {key!r}" if key else ""
    if not deltas:
        raise ValueError(f"merge needs at least one task vector{where}, got none")
    shape = tuple(deltas[0].shape)
    for t, d in enumerate(deltas):
        if tuple(d.shape) != shape:
            raise ValueError(f"task {t} has shape {tuple(d.shape)}{where}, expected {shape} like task 0")
    return shape  # type: ignore[return-value]


def device_of(d: Delta) -> torch.device:
    return d.B.device if isinstance(d, LowRank) else d.device


def as_dense(d: Delta, dtype: torch.dtype) -> Tensor:
    """The dense matrix in ``dtype``; factors are cast before their product (no bf16 rounding of B·A)."""
    if isinstance(d, LowRank):
        return d.B.to(dtype) @ d.A.to(dtype)
    return d.to(dtype)


def densify(deltas: list[Delta]) -> list[Tensor]:
    """Mixed or dense inputs: every task as a dense COMPUTE_DTYPE tensor."""
    return [as_dense(d, COMPUTE_DTYPE) for d in deltas]


def transpose(d: Delta) -> Delta:
    return LowRank(d.A.T, d.B.T) if isinstance(d, LowRank) else d.T


Factors = tuple[Tensor, Tensor]  # (B, A) of a result B·A


def merge_factors(deltas: list[Delta], shape: tuple[int, int], factors: Callable[[list[Delta]], Factors | None],
                  reduce_sides: Literal["both", "left", "none"] = "both") -> Delta:
    """Δ* = B·A with (B, A) = ``factors(task vectors)``; None means Δ* = 0.

    LoRA inputs give a LowRank in COMPUTE_DTYPE: with ``reduce_sides`` "both" or "left" the maths
    runs in core space (``reduce``) and the result is lifted; with "none" on the LowRanks as given.
    Dense or mixed inputs are densified and give a dense tensor.
    """
    device = device_of(deltas[0])
    if not all_lowrank(deltas):
        result = factors(densify(deltas))
        if result is None:
            return torch.zeros(shape, dtype=COMPUTE_DTYPE, device=device)
        return (result[0].to(SVD_DTYPE) @ result[1].to(SVD_DTYPE)).to(COMPUTE_DTYPE)
    if reduce_sides == "none":
        result = factors(deltas)
        if result is None:
            return LowRank.zeros(*shape, device=device)
        return LowRank(*(x.to(COMPUTE_DTYPE).contiguous() for x in result))
    space = reduce(deltas, right=reduce_sides == "both")  # type: ignore[arg-type]
    result = None if space.empty else factors(space.deltas)
    return LowRank.zeros(*shape, device=device) if result is None else space.lift(*result)


def nonzero_count(S: Tensor, shape: tuple[int, int], scale: float | None = None) -> int:
    """How many of the (descending) singular values S are numerically non-zero; see module doc."""
    if S.numel() == 0:
        return 0
    ref = float(S[0]) if scale is None else max(scale, float(S[0]))
    if ref <= 0.0:
        return 0
    return int((S > ref * max(shape) * EPS32).sum())


def polar(M: Tensor, shape: tuple[int, int]) -> Tensor:
    """The orthogonal polar factor P·Qᵀ of M = P·S·Qᵀ (thin SVD), in SVD_DTYPE.

    Only the numerically non-zero σ (``nonzero_count`` at the ambient ``shape``) contribute, so a
    rank-deficient M (two tasks with the same singular vectors) gives the unique partial isometry
    instead of pairing its null directions arbitrarily.
    """
    if M.shape[1] == 0:
        return M.to(SVD_DTYPE)
    P, S, Qh = torch.linalg.svd(M.to(SVD_DTYPE), full_matrices=False)
    k = nonzero_count(S, shape)
    return P[:, :k] @ Qh[:k]


def joint_column_svd(deltas: list[Delta]) -> tuple[Tensor, Tensor]:
    """U and σ of X = [τ_1 | … | τ_T] (n × T·m), all components, σ descending.

    Factor space: B_cat = Q_B C_B and A_tᵀ = Q_t C_t (``delta.span``) give X = Q_B · [C_B[:, J_t] C_tᵀ]_t
    · blockdiag(Q_tᵀ); the last factor has orthonormal rows, so U = Q_B U_c and σ come from the
    SVD of the small core [C_B[:, J_t] C_tᵀ]_t (at most Σ r_t on each side).
    """
    n, _ = shape_of(deltas)
    device = device_of(deltas[0])
    if all_lowrank(deltas):
        parts = [d for d in deltas if d.rank > 0]  # type: ignore[union-attr]
        if not parts or n == 0:
            return torch.zeros(n, 0, dtype=SVD_DTYPE, device=device), torch.zeros(0, dtype=SVD_DTYPE, device=device)
        B = torch.cat([d.B for d in parts], dim=1)
        Wb, Cb = span(B)
        Ca = span(padded_stack([d.A.T for d in parts], max(d.rank for d in parts), SVD_DTYPE))[1]
        blocks, col = [], 0
        for d, C in zip(parts, Ca):
            blocks.append(Cb[:, col:col + d.rank] @ C[:, : d.rank].T)
            col += d.rank
        Uc, S, _ = torch.linalg.svd(torch.cat(blocks, dim=1), full_matrices=False)
        return B.to(SVD_DTYPE) @ (Wb @ Uc), S
    X = torch.cat([as_dense(d, SVD_DTYPE) for d in deltas], dim=1)
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    return U, S


def joint_row_svd(deltas: list[Delta]) -> tuple[Tensor, Tensor]:
    """σ and Vh of X = [τ_1; …; τ_T] (T·n × m): the column SVD of the transposes."""
    V, S = joint_column_svd([transpose(d) for d in deltas])
    return S, V.T


def left_project(U: Tensor, d: Delta) -> Tensor:
    """Uᵀ·τ (k × m) in SVD_DTYPE; for B·A it is (Uᵀ B)·A, never forming B·A."""
    if isinstance(d, LowRank):
        return (U.T @ d.B.to(SVD_DTYPE)) @ d.A.to(SVD_DTYPE)
    return U.T @ d.to(SVD_DTYPE)


def core(d: Delta, QL: Tensor, QR: Tensor) -> Delta:
    """Q_Lᵀ·τ·Q_R, the task vector in the orthonormal bases Q_L (n×a) and Q_R (m×b); a LowRank stays one."""
    if isinstance(d, LowRank):
        return LowRank(QL.T @ d.B.to(SVD_DTYPE), d.A.to(SVD_DTYPE) @ QR)
    return QL.T @ d.to(SVD_DTYPE) @ QR


@dataclass
class TaskCores:
    """τ_t = left · cores[t] · rightᵀ exactly, with orthonormal ``left`` (n×a) and ``right`` (m×b).

    ``left`` spans the joint column space of the task vectors and ``right`` their joint row space,
    each at its numerical rank, so a and b are at most Σ r_t for LoRA inputs (and n, m for dense
    full-rank inputs, where the cores are the matrices in rotated coordinates).
    """

    left: Tensor
    right: Tensor
    cores: list[Delta]


def task_cores(deltas: list[Delta], shape: tuple[int, int]) -> TaskCores:
    """The cores at the numerical ranks of the joint spaces (``shape``: the ambient n×m, see ``task_svds``)."""
    U, Su = joint_column_svd(deltas)
    Sv, Vh = joint_row_svd(deltas)
    QL = U[:, : nonzero_count(Su, shape)]
    QR = Vh[: nonzero_count(Sv, shape)].T
    return TaskCores(QL, QR, [core(d, QL, QR) for d in deltas])


def task_svds(deltas: list[Delta], shape: tuple[int, int]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Thin SVDs of the task vectors restricted to their numerically non-zero components (``shape``:
    the ambient n×m, which sets the float32 rounding floor even when the deltas are cores).
    LowRanks go through one batched ``svds``; dense matrices one by one."""
    lowrank = all_lowrank(deltas)
    found = svds(deltas) if lowrank else [svd(d) for d in deltas]  # type: ignore[arg-type]
    out = []
    for U, S, Vh in found:
        k = nonzero_count(S, shape)
        out.append((U[:, :k], S[:k], Vh[:k]))
    return out


@dataclass
class Reduced:
    """One matrix's LoRA task vectors in orthonormal bases of their joint spans.

    With B_cat = [B_1 … B_T] = Q_B·C_B and Q_B = B_cat·W_B (``delta.span``), τ_t = Q_B·(C_B[:, J_t]·A_t);
    with ``right`` also A_catᵀ = Q_A·C_A, τ_t = Q_B·(C_B[:, J_t]·C_A[:, J_t]ᵀ)·Q_Aᵀ. ``deltas`` are those
    small LowRanks (k_B × k_A, or k_B × m with the A_t as given). Pruning and sign election act on
    entries, so drm and knots reduce only the side whose basis their maths replaces (the left).
    """

    deltas: list[LowRank]
    B: Tensor  # B_cat, n × R, as given (COMPUTE_DTYPE)
    WB: Tensor  # R × k_B
    A: Tensor | None = None  # A_cat, R × m, when the right side is reduced
    WA: Tensor | None = None  # R × k_A

    @property
    def empty(self) -> bool:
        return self.WB.shape[1] == 0 or (self.WA is not None and self.WA.shape[1] == 0)

    def lift(self, B: Tensor, A: Tensor) -> LowRank:
        """The core-space result B·A as a LowRank in the ambient space: (Q_B·B, A·Q_Aᵀ).

        The small coefficients are float64; the n×R and R×m products are float32, as the result
        is: rounding of about eps32·cond(B̂_cat) (measured against the float64 path on the tiny
        suite, whose stacked trained B's reach cond 165: ≤ 6e-7 relative). Q_B·B inherits B's
        conditioning, so storing the factors in bf16 does not amplify their rounding.
        """
        B = self.B @ (self.WB @ B.to(SVD_DTYPE)).to(COMPUTE_DTYPE)
        if self.WA is not None:
            A = (A.to(SVD_DTYPE) @ self.WA.T).to(COMPUTE_DTYPE) @ self.A
        return LowRank(B, A.to(COMPUTE_DTYPE).contiguous())


def reduce(deltas: list[LowRank], right: bool = True) -> Reduced:
    B = torch.cat([d.B for d in deltas], dim=1).to(COMPUTE_DTYPE)
    WB, CB = span(B)
    cols, start = [], 0
    for d in deltas:
        cols.append(slice(start, start + d.rank))
        start += d.rank
    if not right:
        return Reduced([LowRank(CB[:, J], d.A) for J, d in zip(cols, deltas)], B, WB)
    A = torch.cat([d.A for d in deltas], dim=0).to(COMPUTE_DTYPE)
    WA, CA = span(A.T)
    return Reduced([LowRank(CB[:, J], CA[:, J].T) for J in cols], B, WB, A, WA)
