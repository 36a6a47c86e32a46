"""Consensus Task Arithmetic with TALL masks (Wang et al., ICML 2024), as the IBM/STAR reference."""
from __future__ import annotations

import torch
from torch import Tensor

from ..delta import Delta
from .base import MergeMethod, Param
from .ops import dense32


def tall_mask(tau: Tensor, mtl: Tensor, lam: float) -> Tensor:
    """Task t's TALL mask 1[ |τ_t| > λ |τ_MTL − τ_t| ] (strict), as a boolean tensor."""
    return tau.abs() > (mtl - tau).abs() * lam


class TallMasks(MergeMethod):
    """Consensus TA: keep the entries of τ_MTL = α Σ_t τ_t that at least k tasks deem important.

    m_t = 1[ |τ_t| > λ · |τ_MTL − τ_t| ] (strict, with the α-scaled τ_MTL, as the reference);
    M = 1[ Σ_t m_t ≥ k ]; Δ* = M ⊙ τ_MTL. One merged model for all tasks: the per-task masks are
    not used at evaluation. A task that does not target the matrix is zero there, so its m_t is 0
    (0 > λ·|τ_MTL| never holds): it never votes.

    Memory: τ_MTL, an int32 vote count and one task's dense matrix (plus its boolean mask): about
    four n×m buffers whatever the number of tasks; each task's dense matrix is built twice (once
    for the sum, once for its mask) rather than all N being stacked.
    """

    name = "tall_masks"
    description = "Consensus Task Arithmetic: α Σ τ_t masked to entries that ≥ k TALL masks keep."
    params = (
        Param("alpha", 0.4, "scaling α of the summed task vectors τ_MTL"),
        Param("lam", 0.4, "TALL-mask λ: task t keeps entries with |τ_t| > λ |τ_MTL − τ_t|"),
        Param("k", 2, "consensus: keep entries kept by at least k task masks"),
    )
    lowrank = False

    def validate(self) -> None:
        if self.lam < 0:
            raise ValueError(f"tall_masks: parameter 'lam' must be ≥ 0, got {self.lam}")
        if self.k < 0:
            raise ValueError(f"tall_masks: parameter 'k' must be ≥ 0, got {self.k}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        mtl = dense32(deltas[0]).clone()
        for d in deltas[1:]:
            mtl += dense32(d)
        mtl *= self.alpha
        votes = torch.zeros(mtl.shape, dtype=torch.int32, device=mtl.device)
        for d in deltas:
            votes += tall_mask(dense32(d), mtl, self.lam)
        return torch.where(votes >= self.k, mtl, torch.zeros_like(mtl))
