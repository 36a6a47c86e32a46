"""Task vectors of one weight matrix: low-rank factors or dense tensors, and exact factor-space maths.

A LoRA task vector s·B·A is kept as ``LowRank(B=s·B, A=A)``: the scale is folded into B so that
every method sees one representation. Everything here is exact; nothing forms B·A unless asked to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from .numerics import COMPUTE_DTYPE, SVD_DTYPE


@dataclass
class LowRank:
    """The n×m matrix B @ A with B n×r and A r×m. Rank 0 (r = 0) is the zero matrix."""

    B: Tensor
    A: Tensor

    def __post_init__(self) -> None:
        if self.B.ndim != 2 or self.A.ndim != 2 or self.B.shape[1] != self.A.shape[0]:
            raise ValueError(f"LowRank needs B n×r and A r×m, got {tuple(self.B.shape)} and {tuple(self.A.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    @property
    def rank(self) -> int:
        return self.B.shape[1]

    def dense(self) -> Tensor:
        return self.B @ self.A

    def to(self, *args, **kwargs) -> "LowRank":
        return LowRank(self.B.to(*args, **kwargs), self.A.to(*args, **kwargs))

    def scaled(self, c: float) -> "LowRank":
        return LowRank(self.B * c, self.A)

    @staticmethod
    def zeros(n: int, m: int, *, dtype=COMPUTE_DTYPE, device=None) -> "LowRank":
        return LowRank(torch.zeros(n, 0, dtype=dtype, device=device), torch.zeros(0, m, dtype=dtype, device=device))


Delta = Union[LowRank, Tensor]


def dense(d: Delta) -> Tensor:
    return d.dense() if isinstance(d, LowRank) else d


def all_lowrank(deltas: list[Delta]) -> bool:
    return all(isinstance(d, LowRank) for d in deltas)


def concat(deltas: list[LowRank], weights: list[float] | None = None) -> LowRank:
    """Σ_t w_t·Δ_t as one LowRank of rank Σ r_t: concatenate the factors."""
    weights = weights if weights is not None else [1.0] * len(deltas)
    B = torch.cat([w * d.B for w, d in zip(weights, deltas)], dim=1)
    A = torch.cat([d.A for d in deltas], dim=0)
    return LowRank(B, A)


def weighted_sum(deltas: list[Delta], weights: list[float]) -> Delta:
    """Σ_t w_t·Δ_t, staying in factor space when every input is low-rank."""
    if all_lowrank(deltas):
        return concat(deltas, weights)  # type: ignore[arg-type]
    out = torch.zeros(deltas[0].shape, dtype=COMPUTE_DTYPE, device=_device(deltas[0]))
    for w, d in zip(weights, deltas):
        out += w * dense(d)
    return out


def svd(d: Delta) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD U·diag(S)·Vh in SVD_DTYPE, singular values descending.

    For a LowRank the SVD is exact in factor space: QR of B and of Aᵀ, then an r×r core SVD,
    costing O((n+m)r²) instead of O(nm·min(n, m)). Returns at most min(r, n, m) components.
    """
    if isinstance(d, LowRank):
        n, m = d.shape
        if d.rank == 0:
            z = d.B.new_zeros
            return z(n, 0, dtype=SVD_DTYPE), z(0, dtype=SVD_DTYPE), z(0, m, dtype=SVD_DTYPE)
        Qb, Rb = torch.linalg.qr(d.B.to(SVD_DTYPE))
        Qa, Ra = torch.linalg.qr(d.A.T.to(SVD_DTYPE))
        Uc, S, Vch = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
        return Qb @ Uc, S, Vch @ Qa.T
    return torch.linalg.svd(d.to(SVD_DTYPE), full_matrices=False)


def frob_sq(d: Delta) -> float:
    """‖Δ‖_F². For B·A it is trace((BᵀB)(AAᵀ)), with no dense product."""
    if isinstance(d, LowRank):
        B, A = d.B.to(SVD_DTYPE), d.A.to(SVD_DTYPE)
        return float(((B.T @ B) * (A @ A.T)).sum())
    return float(d.to(SVD_DTYPE).pow(2).sum())


def from_svd(U: Tensor, S: Tensor, Vh: Tensor) -> LowRank:
    """The LowRank U·diag(S)·Vh, cast back to COMPUTE_DTYPE."""
    return LowRank((U * S).to(COMPUTE_DTYPE), Vh.to(COMPUTE_DTYPE))


def _device(d: Delta) -> torch.device:
    return d.B.device if isinstance(d, LowRank) else d.device
