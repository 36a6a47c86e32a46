"""MetaGPT, the data-free closed form (Zhou et al. 2024; IBM/STAR ``merger/metagpt.py``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, ModuleStream

if TYPE_CHECKING:
    from ..delta import Delta


class MetaGPT(MergeMethod):
    """Δ* = Σ_t λ_t τ_t with λ_t = ‖τ_t‖² / Σ_j ‖τ_j‖².

    The norms run over all of task t's targeted matrices together, so ``prepare`` makes one pass
    over every matrix; ‖s·B·A‖²_F = trace((BᵀB)(AAᵀ)) needs no dense product. A task that does not
    target a matrix contributes 0 to its norm. If every task vector is zero, all λ_t are 0 (not
    NaN) and the merge is zero. ``weights`` holds the λ_t after ``prepare``.
    """

    name = "metagpt"
    description = "Task vectors weighted by their squared norms over all matrices (MetaGPT)."
    lowrank = True

    def prepare(self, modules: ModuleStream) -> None:
        from ..delta import frob_sq

        norms: list[float] | None = None
        for key, deltas in modules():
            if norms is None:
                norms = [0.0] * len(deltas)
            elif len(deltas) != len(norms):
                raise ValueError(f"metagpt: matrix {key!r} has {len(deltas)} task vectors, expected {len(norms)}")
            for t, d in enumerate(deltas):
                norms[t] += frob_sq(d)
        if norms is None:
            raise ValueError("metagpt: the module stream is empty; there is nothing to merge")
        total = sum(norms)
        self.weights = [x / total if total > 0 else 0.0 for x in norms]

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import all_lowrank, weighted_sum
        from ..numerics import COMPUTE_DTYPE
        from .factor import densify, shape_of

        weights = self.__dict__.get("weights")
        if weights is None:
            raise ValueError("metagpt: call prepare() on the module stream before merge()")
        shape_of(deltas, key)
        if len(deltas) != len(weights):
            raise ValueError(f"metagpt: matrix {key!r} has {len(deltas)} task vectors, prepare() saw {len(weights)}")
        deltas = [d.to(COMPUTE_DTYPE) for d in deltas] if all_lowrank(deltas) else densify(deltas)
        return weighted_sum(deltas, weights)
