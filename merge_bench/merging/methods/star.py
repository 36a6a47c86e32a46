"""STAR: Spectral Truncation And Rescale (IBM/STAR ``merger/STAR.py``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors


def star_factors(U: Tensor, S: Tensor, Vh: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """STAR_η of U·diag(S)·Vh as factors (U_r·diag(σ̃), Vh_r); S descending and all non-zero.

    r_η is the smallest j with Σ_{i≤j} σ_i ≥ (η/100)·Σ σ (η = 100 keeps every component); the kept
    σ are scaled by Σ_all σ / Σ_kept σ, so the nuclear norm is unchanged.
    """
    import torch

    if S.numel() == 0:
        return U[:, :0], Vh[:0]
    total = S.sum()
    if eta >= 100.0:
        r = S.numel()
    else:
        r = min(int((torch.cumsum(S, 0) < total * (eta / 100.0)).sum()) + 1, S.numel())
    kept = S[:r]
    return U[:, :r] * (kept * (total / kept.sum())), Vh[:r]


class Star(MergeMethod):
    """Δ* = (1/N) Σ_t STAR_η(τ_t) (Lee et al. 2025).

    Each task's SVD is exact in factor space for LoRA inputs, so the reference's randomized
    ``known_rank`` speed-up is not needed. Decision where the spec is silent: singular values
    below float32 rounding (see ``factor.nonzero_count``) are treated as exact zeros, so a dense
    τ gives the same r_η and nuclear norm as its factors; a zero τ (a task that does not target
    the matrix) contributes zero.
    """

    name = "star"
    description = "Per-task spectral truncation keeping η% of the nuclear norm, rescaled, then averaged."
    params = (Param("eta", 40.0, "percent of each task matrix's nuclear norm that the kept components must reach",
                    grid=(40.0, 20.0, 60.0, 80.0)),)
    lowrank = True

    def validate(self) -> None:
        if not 0.0 < self.eta <= 100.0:
            raise ValueError(f"star: eta must be in (0, 100], got {self.eta}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from .factor import merge_factors, shape_of

        shape = shape_of(deltas, key)
        # Per-task maths only: the joint bases of core space would cost more than they save.
        return merge_factors(deltas, shape, lambda ds: self.factors(ds, shape), reduce_sides="none")

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        import torch

        from .factor import task_svds

        pieces = [star_factors(U, S, Vh, self.eta) for U, S, Vh in task_svds(deltas, shape)]
        Bs = [B for B, _ in pieces if B.shape[1] > 0]
        if not Bs:
            return None
        B = torch.cat(Bs, dim=1) / len(deltas)
        return B, torch.cat([A for _, A in pieces if A.shape[0] > 0], dim=0)
