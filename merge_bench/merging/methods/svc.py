"""Singular Value Calibration, SVC (Li et al., "When Shared Knowledge Hurts: Spectral Over-Accumulation in
Model Merging", arXiv 2602.05536; FusionBench ``fusion_bench/method/singular_value_calibration``): a
post-hoc correction of any method's merged update, offered as ``<method>+svc``."""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from .base import MergeMethod, ModuleStream, Param

if TYPE_CHECKING:
    from ..delta import Delta

SUFFIX = "+svc"
ALPHA = Param("svc_alpha", 0.1, "SVC's α: γ_r = T / Σ_t max(α, s_t^r) (higher scales shared directions down more)")


def calibrate(merged: Delta, deltas: list[Delta], alpha: float, shape: tuple[int, int]) -> Delta:
    """ΔW = U·diag(σ)·Vᵀ → U·diag(γ ⊙ σ)·Vᵀ with γ_r = T / Σ_t max(α, s_t^r),
    s_t^r = ⟨u_rᵀ·ΔW, u_rᵀ·τ_t⟩ / ‖u_rᵀ·τ_t‖² = σ_r·⟨v_r, τ_tᵀu_r⟩ / ‖τ_tᵀu_r‖².

    A LowRank ΔW keeps its rank: its SVD and the projections Uᵀ·τ_t = (Uᵀ·B_t)·A_t are taken in factor
    space. A dense ΔW needs a full SVD (min(n, m) components). Only ΔW's numerically non-zero components
    are kept. T counts the tasks that target the matrix; a task with no response along u_r (u_rᵀ·τ_t = 0,
    where the reference divides 0 by 0) contributes α, as the reference's max(α, nan) does. We follow the
    documented formula (Eqs. 4 and 8: every response along the merged update's u_r); FusionBench's loop
    implementation (``utils.subspace_consistency_spectral_calibration``) projects each task onto its own
    singular vectors instead. α defaults to 0.1, FusionBench's documented default (its function's is 1.0).
    """
    import torch

    from ..delta import LowRank, svd
    from ..numerics import COMPUTE_DTYPE, SVD_DTYPE
    from .factor import left_project, nonzero_count
    from .ops import is_zero

    live = [d for d in deltas if not is_zero(d)]
    U, S, Vh = svd(merged)
    k = nonzero_count(S, shape)
    if k == 0 or not live:
        return merged
    U, S, Vh = U[:, :k].to(SVD_DTYPE), S[:k].to(SVD_DTYPE), Vh[:k].to(SVD_DTYPE)
    total = torch.zeros_like(S)
    for d in live:
        if isinstance(d, LowRank):  # u_rᵀ·B·A: ⟨·, σ_r·v_r⟩ and ‖·‖² from k×r products, no k×m row
            P, A = U.T @ d.B.to(SVD_DTYPE), d.A.to(SVD_DTYPE)
            inner = S * (P * (Vh @ A.T)).sum(dim=1)
            norm = ((P @ (A @ A.T)) * P).sum(dim=1)
        else:
            rows = left_project(U, d)  # u_rᵀ·τ_t
            inner, norm = (S[:, None] * Vh * rows).sum(dim=1), rows.pow(2).sum(dim=1)
        s = inner / torch.where(norm > 0, norm, 1.0)
        total += torch.where(norm > 0, s.clamp(min=alpha), torch.full_like(s, alpha))
    gamma = len(live) / total
    out = LowRank((U * (gamma * S)).to(COMPUTE_DTYPE), Vh.to(COMPUTE_DTYPE).contiguous())
    return out if isinstance(merged, LowRank) else out.dense()


class WithSVC(MergeMethod):
    """Base of the ``<method>+svc`` variants: ``inner`` merges, then ``calibrate`` corrects each matrix."""

    inner: ClassVar[type[MergeMethod]]

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.rule = self.inner(**{k: v for k, v in self.config.items() if k != ALPHA.name})

    @classmethod
    def search_grid(cls, config: dict[str, Any] | None = None) -> list[tuple[str, tuple]]:
        return cls.inner.search_grid(config)

    def use_calibration(self, grams: Any) -> None:
        self.rule.use_calibration(grams)

    def prepare(self, modules: ModuleStream) -> None:
        self.rule.prepare(modules)

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from .factor import shape_of

        return calibrate(self.rule.merge(deltas, key), deltas, self.svc_alpha, shape_of(deltas, key))


@lru_cache(maxsize=None)
def svc_variant(inner: type[MergeMethod]) -> type[MergeMethod]:
    """The ``<inner.name>+svc`` class: the inner's parameters plus ``svc_alpha``, the inner's grid."""
    if any(p.name == ALPHA.name for p in inner.params):
        raise ValueError(f"method {inner.name!r} already has a parameter {ALPHA.name!r}; it cannot take {SUFFIX}")
    attrs = {
        "name": inner.name + SUFFIX,
        "description": f"{inner.name}, then Singular Value Calibration of each merged matrix.",
        "params": (*inner.params, ALPHA),
        "search": inner.search,
        "lowrank": inner.lowrank,
        "data": inner.data,
        "inner": inner,
        "__doc__": f"``{inner.name}`` followed by SVC (see ``merging.methods.svc``).",
        "__module__": __name__,
    }
    return type(f"{inner.__name__}SVC", (WithSVC,), attrs)
