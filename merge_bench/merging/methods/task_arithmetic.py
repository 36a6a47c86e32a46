from ..delta import Delta, weighted_sum
from .base import MergeMethod, Param


class TaskArithmetic(MergeMethod):
    """Δ* = λ Σ_t τ_t (Ilharco et al. 2023)."""

    name = "task_arithmetic"
    description = "Scaled sum of the task vectors."
    params = (Param("lam", 0.4, "scaling λ of the summed task vectors"),)
    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        return weighted_sum(deltas, [self.lam] * len(deltas))
