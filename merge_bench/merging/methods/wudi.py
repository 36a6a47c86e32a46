"""WUDI-Merging (Cheng et al., ICML 2025, arXiv 2503.08099; nathanielyvo/WUDI-Merging; FusionBench
``fusion_bench/method/wudi/wudi.py``), solved in closed form."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ALPHA_GRID, FactorMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors


def wudi_loss(X: Tensor, taus: list[Tensor]) -> Tensor:
    """The reference's objective Σ_t ‖(X − τ_t)·τ_tᵀ‖²_F / ‖τ_t‖²_F (zero tasks contribute nothing)."""
    total = X.new_zeros(())
    for tau in taus:
        norm = tau.pow(2).sum()
        if norm > 0:
            total = total + ((X - tau) @ tau.T).pow(2).sum() / norm
    return total


def pinv_psd(H: Tensor, shape: tuple[int, int]) -> Tensor:
    """H⁺ of a symmetric positive semi-definite H by its eigendecomposition.

    An eigenvalue λ counts when √λ is above float32 rounding at the ambient shape (``nonzero_count``'s
    rule on √λ, the singular values of the stacked normalised task vectors), so a dense τ made from
    float32 factors sees the same rank as its factors.
    """
    import torch

    from .factor import EPS32

    lam, V = torch.linalg.eigh(H)
    top = float(lam[-1]) if lam.numel() else 0.0
    if top <= 0.0:
        return torch.zeros_like(H)
    keep = lam.clamp(min=0.0).sqrt() > top ** 0.5 * max(shape) * EPS32
    V = V[:, keep]
    return (V / lam[keep]) @ V.T


class Wudi(FactorMethod):
    """Δ* = α·X*, X* = argmin_X Σ_t ‖(X − τ_t)·τ_tᵀ‖²_F / ‖τ_t‖²_F, in closed form.

    The objective is RegMean's with the Gram G_t = τ_tᵀτ_t/‖τ_t‖²_F: setting its gradient to zero gives
    X·Σ_t G_t = Σ_t τ_t·G_t, whose minimum-norm solution is X* = (Σ_t τ_t·G_t)·(Σ_t G_t)⁺. Its rows lie
    in the span of the τ_t's rows, so on LoRA inputs X* has rank ≤ R = Σ r_t and is computed on the R×R
    cores (``factor.merge_factors``): a PEFT adapter. When the row spaces of the tasks are independent
    (T·r ≤ m), X* reproduces every τ_t exactly on its own inputs (τ_t's row space).

    Why not the reference's loop (Adam, lr 1e-5, 300 steps in the function, 400 in FusionBench's config,
    from X = Σ_t τ_t): it stops far from the optimum and, since Adam's per-entry steps leave the row
    space, returns a full-rank update that no LoRA can hold (three random rank-4 LoRAs of 64×48: 400 steps
    end 43 % from X*, at rank 48 where X* has rank 12). The closed form reaches the objective's minimum (a test checks it against a
    long gradient run). Non-matrix parameters do not occur here (only targeted matrices are merged).
    Decisions: a task that does not target the matrix (τ_t = 0) is left out of both sums; directions of
    Σ_t G_t below float32 rounding count as zero (``pinv_psd``). α is the reference's
    ``scaling_coefficient`` (1.0).
    """

    name = "wudi"
    description = "WUDI: the update closest to every task on its own input subspace (closed form)."
    params = (Param("alpha", 1.0, "scaling α of the merged update", grid=ALPHA_GRID),)

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        from ..numerics import SVD_DTYPE
        from .factor import as_dense

        taus = [as_dense(d, SVD_DTYPE) for d in deltas]
        taus = [t for t in taus if bool(t.any())]
        if not taus:
            return None
        H = sum(t.T @ t / t.pow(2).sum() for t in taus)
        N = sum(t @ (t.T @ t) / t.pow(2).sum() for t in taus)
        return self.alpha * N, pinv_psd(H, shape)
