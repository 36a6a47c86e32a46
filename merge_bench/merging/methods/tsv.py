"""TSV-Merge: Task Singular Vectors (Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ALPHA_GRID, FactorMethod, Param

if TYPE_CHECKING:
    from ..delta import Delta
    from .factor import Factors


class TSV(FactorMethod):
    """Δ* = α·polar(Ũ)·diag(ŝ)·polar(Ṽ)ᵀ over the top-k_t singular triplets of every task.

    k_t = min(⌊p/T⌋, rank_t) with p = min(n, m) (the ambient size, as the reference) and rank_t the
    numerical rank of τ_t: the reference pulls in arbitrary null vectors when rank_t < p/T, we drop
    them (methods.md). For LoRA inputs everything runs in core space (``factor.merge_factors``): Ũ and
    Ṽ have at most Σ r_t rows there, so their polar factors are SVDs of small matrices, and the output
    is a LowRank of rank ≤ Σ r_t. A zero task contributes no triplets.
    """

    name = "tsv"
    description = "Task Singular Vectors: per-task top singular vectors, decorrelated by polar factors."
    params = (Param("alpha", 1.0, "scaling α of the merged update", grid=ALPHA_GRID),)

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        import torch

        from .factor import polar, task_svds

        per_task = min(shape) // len(deltas)  # p = min(n, m) of the ambient matrix, as the reference
        Us, Ss, Vhs = [], [], []
        for U, S, Vh in task_svds(deltas, shape):
            k = min(per_task, S.numel())
            Us.append(U[:, :k])
            Ss.append(S[:k])
            Vhs.append(Vh[:k])
        S = torch.cat(Ss)
        if S.numel() == 0:
            return None
        Ou = polar(torch.cat(Us, dim=1), shape)
        Ov = polar(torch.cat(Vhs, dim=0).T, shape)
        return self.alpha * Ou * S, Ov.T
