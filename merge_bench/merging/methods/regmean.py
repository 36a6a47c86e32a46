"""RegMean (Jin et al. 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models").

For a linear layer y = W x, with G_t = X_tᵀX_t the Gram of the layer's inputs in model t (base + τ_t) over a
calibration set, and G̃_t = a·G_t + (1 − a)·diag(G_t):

    ΔW* = (Σ_t ΔW_t G̃_t) (Σ_t G̃_t)⁻¹

RegMean minimises Σ_t ‖X_t W − X_t W_t‖² in closed form; merging the task vectors is the same problem, since
(Σ G̃_t)⁻¹ maps the base's own term back to W_0. For LoRA inputs ΔW_t = B_t A_t this is exactly a LoRA of rank
Σ r_t: B = [B_1 … B_T], A = [A_1 G̃_1 M; …; A_T G̃_T M] with M = (Σ G̃_t)⁻¹, so it is computed in factor space
(``lowrank``) and written as a PEFT adapter.

The Grams come from ``merging/grams.py`` (forward hooks on the targeted layers, one pass over each task's
calibration prompts, cached); the engine hands them over with ``use_calibration`` before any merge. The
solve runs in float64 by Cholesky: Σ G̃_t is symmetric and, for a < 1 or enough calibration tokens,
positive definite; a numerically singular one is an error naming the layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from ..delta import Delta
    from ..grams import Grams


class RegMean(MergeMethod):
    name = "regmean"
    description = "RegMean: the least-squares merge of each layer under its inputs' Grams (needs calibration data)."
    params = (Param("a", 0.9, "reduction a: G̃ = a·G + (1 − a)·diag(G)", grid=(0.9, 0.5, 0.1, 0.3, 0.7, 1.0)),)
    lowrank = True
    data = "calibration"

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.grams: Grams | None = None

    def validate(self) -> None:
        if not 0.0 <= self.a <= 1.0:
            raise ValueError(f"regmean: parameter 'a' is in [0, 1], got {self.a}")

    def use_calibration(self, grams: Grams) -> None:
        self.grams = grams

    def reduced(self, gram):
        import torch

        return self.a * gram + (1.0 - self.a) * torch.diag(torch.diagonal(gram))

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        import torch

        from ..delta import LowRank, all_lowrank, dense
        from ..numerics import COMPUTE_DTYPE, SVD_DTYPE

        if self.grams is None:
            raise ValueError("regmean needs calibration Grams (merge(..., calibration=...) or run's calibration)")
        device = deltas[0].B.device if isinstance(deltas[0], LowRank) else deltas[0].device
        reduced = [self.reduced(self.grams.get(t, key).to(device, SVD_DTYPE)) for t in range(len(deltas))]
        total = sum(reduced)
        if all_lowrank(deltas):
            # A_t G̃_t M = (M G̃_t A_tᵀ)ᵀ since M and G̃_t are symmetric: one solve with every task's block
            rhs = torch.cat([g @ d.A.to(SVD_DTYPE).T for g, d in zip(reduced, deltas)], dim=1)
            A = _solve(total, rhs, key).T.to(COMPUTE_DTYPE)
            B = torch.cat([d.B.to(COMPUTE_DTYPE) for d in deltas], dim=1)
            return LowRank(B, A.contiguous())
        rhs = sum(g @ dense(d).to(SVD_DTYPE).T for g, d in zip(reduced, deltas))   # (Σ ΔW_t G̃_t)ᵀ
        return _solve(total, rhs, key).T.to(COMPUTE_DTYPE).contiguous()


def _solve(matrix, rhs, key: str):
    """matrix⁻¹ rhs for the symmetric positive (semi)definite summed Gram, by Cholesky. Its pivots bound
    the condition number from below, (max/min diag L)², so a numerically singular Gram is refused."""
    import torch

    L, info = torch.linalg.cholesky_ex(matrix)
    d = torch.diagonal(L)
    if int(info) != 0 or not torch.isfinite(d).all() or float(d.min()) ** 2 < 1e-12 * float(d.max()) ** 2:
        raise ValueError(f"regmean: the summed Gram of {key} is singular (too few calibration tokens for its "
                         f"{matrix.shape[0]} inputs at a = 1?); use a < 1 or more calibration data")
    return torch.cholesky_solve(rhs, L)
