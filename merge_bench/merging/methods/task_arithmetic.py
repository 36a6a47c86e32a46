from __future__ import annotations

from typing import TYPE_CHECKING

from .base import TA_GRID, MergeMethod, Param

if TYPE_CHECKING:
    from ..delta import Delta


class TaskArithmetic(MergeMethod):
    """Δ* = λ Σ_t τ_t (Ilharco et al. 2023)."""

    name = "task_arithmetic"
    description = "Scaled sum of the task vectors."
    params = (Param("lam", 0.4, "scaling λ of the summed task vectors", grid=TA_GRID),)
    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import weighted_sum

        return weighted_sum(deltas, [self.lam] * len(deltas))
