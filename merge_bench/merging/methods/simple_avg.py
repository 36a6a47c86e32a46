from ..delta import Delta, weighted_sum
from .base import MergeMethod


class SimpleAvg(MergeMethod):
    """Δ* = (1/N) Σ_t τ_t."""

    name = "simple_avg"
    description = "Mean of the task vectors."
    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        return weighted_sum(deltas, [1.0 / len(deltas)] * len(deltas))
