"""Iso-C: isotropic merging in the common subspace (Marczak et al., ICML 2025; danielm1405/iso-merging)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import ALPHA_GRID, FactorMethod, Param

if TYPE_CHECKING:
    from ..delta import Delta
    from .factor import Factors


class IsoC(FactorMethod):
    """Δ* = α·σ̄·U_K·V_Kᵀ where Δ_TA = Σ_t τ_t = U·diag(σ)·Vᵀ has K non-zero singular values.

    ``sigma_mean = rank`` (default): σ̄ = Σσ/K, keeping the nuclear norm on the range;
    ``full``: σ̄ = Σσ/p with p = min(n, m), the reference's value on the range. The reference also
    sets the p − K null directions to σ̄, pairing them arbitrarily; on LoRA inputs we drop that part
    (methods.md), so the output is a LowRank of rank K ≤ Σ r_t, computed in core space
    (``factor.merge_factors``). Decision: K counts singular values above float32 rounding
    relative to max(σ_max(Δ_TA), max_t ‖τ_t‖_F), so a sum that cancels to rounding noise gives 0.
    """

    name = "iso_c"
    description = "Iso-C: the summed task vector with its spectrum flattened to the mean singular value."
    params = (
        Param("sigma_mean", "rank", "σ̄ over the K non-zero singular values (rank) or over p = min(n, m) (full)",
              ("rank", "full")),
        Param("alpha", 1.0, "scaling α of the merged update", grid=ALPHA_GRID),
    )

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        from ..delta import frob_sq, svd, weighted_sum
        from .factor import nonzero_count

        U, S, Vh = svd(weighted_sum(deltas, [1.0] * len(deltas)))
        scale = max([math.sqrt(frob_sq(d)) for d in deltas])
        K = nonzero_count(S, shape, scale)
        if K == 0:
            return None
        sbar = S[:K].sum() / (K if self.sigma_mean == "rank" else min(shape))
        return self.alpha * sbar * U[:, :K], Vh[:K]
