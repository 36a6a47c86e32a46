"""TSV-Merge: Task Singular Vectors (Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors)."""
from __future__ import annotations

import torch

from ..delta import Delta, all_lowrank
from .base import MergeMethod, Param
from .factor import densify, device_of, output, polar, shape_of, task_svd, zero_like


class TSV(MergeMethod):
    """Δ* = α·polar(Ũ)·diag(ŝ)·polar(Ṽ)ᵀ over the top-k_t singular triplets of every task.

    k_t = min(⌊p/T⌋, rank_t) with p = min(n, m) (the ambient size, as the reference) and rank_t the
    numerical rank of τ_t: the reference pulls in arbitrary null vectors when rank_t < p/T, we drop
    them (methods.md). Ũ = [U_1,k … U_T,k] is n × K with K ≤ Σ r_t, so its polar factor costs a thin
    n×K SVD; for LoRA inputs every per-task SVD is exact in factor space and the output is a LowRank
    of rank K. A zero task contributes no triplets.
    """

    name = "tsv"
    description = "Task Singular Vectors: per-task top singular vectors, decorrelated by polar factors."
    params = (Param("alpha", 1.0, "scaling α of the merged update"),)
    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        shape = shape_of(deltas, key)
        lowrank = all_lowrank(deltas)
        if not lowrank:
            deltas = densify(deltas)
        per_task = min(shape) // len(deltas)
        Us, Ss, Vhs = [], [], []
        for d in deltas:
            U, S, Vh = task_svd(d)
            k = min(per_task, S.numel())
            Us.append(U[:, :k])
            Ss.append(S[:k])
            Vhs.append(Vh[:k])
        S = torch.cat(Ss)
        if S.numel() == 0:
            return zero_like(shape, lowrank, device_of(deltas[0]))
        Ou = polar(torch.cat(Us, dim=1))
        Ov = polar(torch.cat(Vhs, dim=0).T)
        return output(self.alpha * Ou * S, Ov.T, lowrank)
