"""CART: centered arithmetic with rank-reduced task vectors (Choi et al., arXiv 2412.12153; the Core Space and
Compress-then-Merge code's ``get_cart_delta_w``: apanariello4/core-space-merging and
ZhengbaoHe/compress-then-merge ``task_merger.py``)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors


class Cart(MergeMethod):
    """Δ* = α·(θ̄ + λ·Σ_t SVD_k(τ_t − θ̄)), θ̄ = (1/T)·Σ_t τ_t, k = ⌈ρ·p⌉, p = min(n, m).

    Defaults are the reference code's (``cart_pruning_rank`` ρ = 0.04, ``cart_scaling_coeffs`` λ = 0.1);
    α is the overall scaling the Core Space code searches on validation (default 1.0, as its other rules);
    its grid reaches above 1 because θ̄ is a mean (task arithmetic's λ = 0.4 is α = 0.4·T on it).

    On LoRA inputs in full space this is simple averaging (times α) whenever k ≥ R = Σ r_t: every
    τ_t − θ̄ has rank ≤ R, so nothing is truncated, and Σ_t (τ_t − θ̄) = 0. (At Mistral-7B's q, p = 4096
    and k = 164 < R = 192 for 12 rank-16 tasks: there it truncates a little.) CART does its work in
    Core Space (``core_cart``), where p is the core's size. LoRA inputs are merged exactly in factor
    space: everything lies in the joint column and row spaces of the tasks, so the SVDs are taken on
    the cores (with the ambient p) and the output is a LowRank of rank ≤ R.
    """

    name = "cart"
    description = "CART: mean task vector plus λ times each task's rank-k centred residual."
    params = (
        Param("rank_ratio", 0.04, "ρ: each residual keeps k = ⌈ρ·min(n, m)⌉ singular components",
              grid=(0.04, 0.08, 0.16)),
        Param("lam", 0.1, "λ: weight of the rank-reduced residuals"),
        Param("alpha", 1.0, "α: scaling of the merged update", grid=(1.0, 2.0, 3.0, 4.0, 0.5)),
    )
    search = ("alpha", "rank_ratio")
    lowrank = True

    def validate(self) -> None:
        if not 0.0 < self.rank_ratio <= 1.0:
            raise ValueError(f"cart: rank_ratio must be in (0, 1], got {self.rank_ratio}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import all_lowrank
        from .factor import merge_factors, shape_of

        shape = shape_of(deltas, key)
        if not all_lowrank(deltas):
            return self.dense(deltas, shape)
        return merge_factors(deltas, shape, lambda ds: self.factors(ds, shape))

    def rank(self, shape: tuple[int, int]) -> int:
        return math.ceil(self.rank_ratio * min(shape))

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors:
        """On the cores (``merge_factors``): the same maths on k_B × k_A matrices, returned as one core
        (its factor pair (M, I)), so the lifted rank stays ≤ R."""
        import torch

        M = self.centred(deltas, shape)
        return M, torch.eye(M.shape[1], dtype=M.dtype, device=M.device)

    def dense(self, deltas: list[Delta], shape: tuple[int, int]) -> Tensor:
        from ..numerics import COMPUTE_DTYPE

        return self.centred(deltas, shape).to(COMPUTE_DTYPE)

    def centred(self, deltas: list[Delta], shape: tuple[int, int]) -> Tensor:
        """α·(θ̄ + λ·Σ_t SVD_k(τ_t − θ̄)) in SVD_DTYPE, with k from the ambient ``shape``."""
        import torch

        from ..numerics import SVD_DTYPE
        from .factor import as_dense, nonzero_count

        taus = torch.stack([as_dense(d, SVD_DTYPE) for d in deltas])
        mean = taus.mean(dim=0)
        # the residuals cancel to rounding noise where tasks agree: σ is measured against the inputs
        scale = float(torch.linalg.matrix_norm(taus).max())
        U, S, Vh = torch.linalg.svd(taus - mean, full_matrices=False)
        out = mean
        for t in range(len(deltas)):
            kept = min(self.rank(shape), nonzero_count(S[t], shape, scale))
            out = out + self.lam * (U[t, :, :kept] * S[t, :kept]) @ Vh[t, :kept]
        return self.alpha * out
