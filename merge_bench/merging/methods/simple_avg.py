from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod

if TYPE_CHECKING:
    from ..delta import Delta


class SimpleAvg(MergeMethod):
    """Δ* = (1/N) Σ_t τ_t."""

    name = "simple_avg"
    description = "Mean of the task vectors."
    lowrank = True

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import weighted_sum

        return weighted_sum(deltas, [1.0 / len(deltas)] * len(deltas))
