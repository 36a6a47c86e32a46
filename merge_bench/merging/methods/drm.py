"""DRM: Decom-Renorm-Merge (Chaichana et al. 2025; yophis/decom-renorm-merge ``drm/_decom_renorm_merge.py``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors

# Rows of the joint Vᵀ have unit norm, so ν_{t,i} ∈ [0, 1]. A block row at or below float32 resolution
# is rounding noise (the task does not touch that direction); renormalizing it would blow the noise up
# to a unit-norm row that then competes in the joint pruning. Such rows count as zero rows.
ZERO_ROW = 1e-6


def renormalized_blocks(U: Tensor, S: Tensor, deltas: list[Delta]) -> tuple[Tensor, Tensor]:
    """The renormalized per-task blocks Ṽ_tᵀ (T × k × m, COMPUTE_DTYPE) and σ_{t,i} (T × k).

    V_tᵀ = Σ⁻¹Uᵀτ_t equals the reference's Vᵀ block exactly and is exactly zero for a zero task.
    For a LoRA, V_tᵀ = P_t·A_t with the small P_t = Σ⁻¹UᵀB_t, so the row norms come from the r×r
    Gram, ν² = rowsum((P_t·A_tA_tᵀ) ⊙ P_t), in float64, and the renormalized block is one float32
    product (P_t/ν)·A_t: no float64 T×k×m tensor and no dense pass for the norms.
    """
    import torch

    from ..delta import all_lowrank
    from ..numerics import COMPUTE_DTYPE, SVD_DTYPE
    from .factor import left_project

    if all_lowrank(deltas):
        k, m = U.shape[1], deltas[0].shape[1]
        V = torch.empty((len(deltas), k, m), dtype=COMPUTE_DTYPE, device=U.device)
        sigma = torch.zeros((len(deltas), k), dtype=SVD_DTYPE, device=U.device)
        for t, d in enumerate(deltas):
            A = d.A.to(SVD_DTYPE)
            P = (U.T @ d.B.to(SVD_DTYPE)) / S[:, None]
            nu = ((P @ (A @ A.T)) * P).sum(dim=1).clamp(min=0.0).sqrt()
            live = nu > ZERO_ROW
            P = torch.where(live[:, None], P / torch.where(live, nu, torch.ones_like(nu))[:, None], torch.zeros_like(P))
            sigma[t] = torch.where(live, S * nu, torch.zeros_like(nu))
            torch.matmul(P.to(COMPUTE_DTYPE), d.A.to(COMPUTE_DTYPE), out=V[t])
        return V, sigma
    V = torch.stack([left_project(U, d) / S[:, None] for d in deltas])  # T × k × m
    nu = V.norm(dim=2)  # T × k
    live = nu > ZERO_ROW
    V = torch.where(live[:, :, None], V / torch.where(live, nu, torch.ones_like(nu))[:, :, None], torch.zeros_like(V))
    sigma = torch.where(live, S[None, :] * nu, torch.zeros_like(nu))
    return V.to(COMPUTE_DTYPE), sigma


def drm_horizontal(deltas: list[Delta], drop_rate: float, coeff: float) -> Factors | None:
    """DRM-H on one matrix: the factors (U, Ȳ) of Δ* = U·Ȳ, or None when Δ* = 0.

    Steps per methods.md: joint SVD of [τ_1 | … | τ_T] (factor space for LoRA inputs), keep
    σ_i > 0.01·σ_max, per-task blocks V_tᵀ = Σ⁻¹ Uᵀ τ_t, renormalize rows, prune jointly, rescale by
    σ_{t,i}, elect signs (exact-zero sums take the overall majority sign), disjoint mean.
    The T × k × m blocks are worked on in place with float arithmetic (see ``ops.disjoint_mean_``
    for the sign-agreement identity): they are the only large tensors here.
    """
    import torch

    from ..numerics import COMPUTE_DTYPE
    from ..selection import kth_largest_abs
    from .factor import joint_column_svd
    from .ops import disjoint_mean_, stacked_sum, trim_

    U, S = joint_column_svd(deltas)
    if S.numel() == 0 or float(S[0]) <= 0.0:
        return None
    keep = S > 0.01 * S[0]
    U, S = U[:, keep], S[keep]
    Y, sigma = renormalized_blocks(U, S, deltas)
    # Keep one entry more than round((1 − p)·L), as the reference's kthvalue threshold does;
    # p = 0 asks for L + 1 entries, so the threshold is 0 and everything is kept.
    count = round((1.0 - drop_rate) * Y.numel()) + 1
    threshold = kth_largest_abs(lambda: [Y], count)
    trim_(Y, threshold).mul_(sigma.to(COMPUTE_DTYPE)[:, :, None])
    sign = torch.sign(stacked_sum(Y))
    sign = torch.where(sign == 0, torch.sign(sign.sum()), sign)
    Ybar = disjoint_mean_(Y, sign).mul_(coeff)
    return U, Ybar


class DRM(MergeMethod):
    """Decom-Renorm-Merge, horizontal (shared left basis) or vertical (shared right basis).

    For LoRA inputs the shared side runs in core space (``factor.merge_factors``) and the joint SVD
    is exact in factor space (a core of side ≤ Σ r_t); only the per-task k×m blocks (k ≤ Σ r_t) are
    materialized, because pruning and sign election act on their entries. Δ* = U·Ȳ comes back as a
    LowRank of rank ≤ Σ r_t. DRM-V is DRM-H on the transposed task vectors, transposed back (Δ* = Ȳ·Vᵀ).

    Decisions (match the reference unless noted): the joint prune keeps one entry more than
    round((1 − p)·L) because the reference thresholds at the (L − round((1 − p)·L))-th smallest
    |x|, keeping it; per-entry sign sums that are exactly 0 take the sign of the sum of all
    elected signs; a block row with ν ≤ 1e-6 (a task that does not touch that direction, or
    float rounding of one) is a zero row with σ_{t,i} = 0, never NaN. Entries tied with the
    threshold are all kept; note that a rank-1 task's renormalized block has identical rows, so
    its entries come in exact tie groups (kept or dropped whole in factor space, while rounding in
    a dense product may split a group that straddles the threshold). ``coeff`` is the c_t of the
    spec, the same for every task (reference default 1).
    """

    name = "drm"
    description = "Decom-Renorm-Merge: joint SVD, renormalized per-task bases, pruned, sign-elected, averaged."
    params = (
        Param("direction", "horizontal", "stack task vectors side by side (shared U) or on top (shared V)",
              ("horizontal", "vertical")),
        Param("drop_rate", 0.8, "fraction p of the renormalized basis entries to drop (joint over tasks)",
              grid=(0.8, 0.6, 0.7, 0.9)),
        Param("coeff", 1.0, "merging coefficient c_t applied to every task before the disjoint mean",
              grid=(1.0, 0.8, 1.2)),
    )
    lowrank = True

    def validate(self) -> None:
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drm: drop_rate must be in [0, 1), got {self.drop_rate}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import LowRank
        from .factor import merge_factors, shape_of, transpose

        shape = shape_of(deltas, key)
        vertical = self.direction == "vertical"
        if vertical:
            deltas = [transpose(d) for d in deltas]
            shape = (shape[1], shape[0])
        # The shared basis is the only orthogonally equivariant side: reduce that one to core space.
        result = merge_factors(deltas, shape, lambda ds: drm_horizontal(ds, self.drop_rate, self.coeff),
                               reduce_sides="left")
        if vertical:
            result = transpose(result)
            if isinstance(result, LowRank):
                result = LowRank(result.B.contiguous(), result.A.contiguous())
        return result
