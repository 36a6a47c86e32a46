"""Shared linear algebra of the SVD-family methods (star, drm, knots, tsv, iso_c, iso_cts).

Every helper takes one weight matrix's task vectors. When all of them are ``LowRank`` the work is
exact in factor space (QRs of n×r or m×r factors, SVDs of cores of side ≤ Σ r_t, products of
n×k and k×m pieces with k ≤ Σ r_t); otherwise the same quantity is computed from dense matrices.
Results come back in ``SVD_DTYPE`` (float64); the methods cast what they return.

Numerical zeros. A float32 task vector B·A formed densely has rounding noise of order
eps32·‖τ‖ in its "zero" singular values, while its factor-space SVD has exact zeros. So that both
paths see the same rank, a singular value counts as non-zero only above
``scale · max(n, m) · eps32`` (NumPy's ``matrix_rank`` rule for float32 data); ``scale`` is the
largest singular value at hand unless a caller passes a larger reference (for residuals and sums
that may cancel).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..delta import Delta, LowRank, all_lowrank, svd
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


def zero_like(shape: tuple[int, int], lowrank: bool, device: torch.device) -> Delta:
    if lowrank:
        return LowRank.zeros(*shape, device=device)
    return torch.zeros(shape, dtype=COMPUTE_DTYPE, device=device)


def output(B: Tensor, A: Tensor, lowrank: bool) -> Delta:
    """The result B·A as a LowRank (factor inputs) or a dense tensor, in COMPUTE_DTYPE."""
    if lowrank:
        return LowRank(B.to(COMPUTE_DTYPE).contiguous(), A.to(COMPUTE_DTYPE).contiguous())
    return (B.to(SVD_DTYPE) @ A.to(SVD_DTYPE)).to(COMPUTE_DTYPE)


def nonzero_count(S: Tensor, shape: tuple[int, int], scale: float | None = None) -> int:
    """How many of the (descending) singular values S are numerically non-zero; see module doc."""
    if S.numel() == 0:
        return 0
    ref = float(S[0]) if scale is None else max(scale, float(S[0]))
    if ref <= 0.0:
        return 0
    return int((S > ref * max(shape) * EPS32).sum())


def polar(M: Tensor) -> Tensor:
    """The orthogonal polar factor P·Qᵀ of M = P·S·Qᵀ (thin SVD), in SVD_DTYPE."""
    if M.shape[1] == 0:
        return M.to(SVD_DTYPE)
    P, _, Qh = torch.linalg.svd(M.to(SVD_DTYPE), full_matrices=False)
    return P @ Qh


def joint_column_svd(deltas: list[Delta]) -> tuple[Tensor, Tensor]:
    """U and σ of X = [τ_1 | … | τ_T] (n × T·m), all components, σ descending.

    Factor space: B_cat = Q_B R_B and A_tᵀ = Q_t R_t give X = Q_B · [R_B[:, J_t] R_tᵀ]_t ·
    blockdiag(Q_tᵀ); the last factor has orthonormal rows, so U = Q_B U_c and σ come from the
    SVD of the small core [R_B[:, J_t] R_tᵀ]_t (at most Σ r_t on each side).
    """
    n, _ = shape_of(deltas)
    device = device_of(deltas[0])
    if all_lowrank(deltas):
        parts = [d for d in deltas if d.rank > 0]  # type: ignore[union-attr]
        if not parts:
            return torch.zeros(n, 0, dtype=SVD_DTYPE, device=device), torch.zeros(0, dtype=SVD_DTYPE, device=device)
        Qb, Rb = torch.linalg.qr(torch.cat([d.B for d in parts], dim=1).to(SVD_DTYPE))
        blocks, col = [], 0
        for d in parts:
            _, Ra = torch.linalg.qr(d.A.T.to(SVD_DTYPE))
            blocks.append(Rb[:, col:col + d.rank] @ Ra.T)
            col += d.rank
        Uc, S, _ = torch.linalg.svd(torch.cat(blocks, dim=1), full_matrices=False)
        return Qb @ Uc, S
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


def core(d: Delta, QL: Tensor, QR: Tensor) -> Tensor:
    """Q_Lᵀ·τ·Q_R, the task vector in the orthonormal bases Q_L (n×a) and Q_R (m×b)."""
    if isinstance(d, LowRank):
        return (QL.T @ d.B.to(SVD_DTYPE)) @ (d.A.to(SVD_DTYPE) @ QR)
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
    cores: list[Tensor]


def task_cores(deltas: list[Delta]) -> TaskCores:
    shape = shape_of(deltas)
    U, Su = joint_column_svd(deltas)
    Sv, Vh = joint_row_svd(deltas)
    QL = U[:, : nonzero_count(Su, shape)]
    QR = Vh[: nonzero_count(Sv, shape)].T
    return TaskCores(QL, QR, [core(d, QL, QR) for d in deltas])


def task_svd(d: Delta) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of one task vector restricted to its numerically non-zero components."""
    U, S, Vh = svd(d)
    k = nonzero_count(S, tuple(d.shape))  # type: ignore[arg-type]
    return U[:, :k], S[:k], Vh[:k]
