"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ..delta import Delta
from .base import MergeMethod, ModuleStream, Param
from .ops import dense32, global_thresholds, local_threshold, ties_combine, trim


class Ties(MergeMethod):
    """TIES: per task keep the top-k % entries by magnitude, elect signs, take the disjoint mean, ×λ.

    Trim ``global`` (the default, as the IBM/STAR reference): one threshold per task, the
    ⌊numel·k/100⌋-th largest |x| over all matrices that task targets, found in ``prepare`` by an
    exact streaming selection. Trim ``local``: the same count and threshold per matrix. Entries with
    |x| ≥ threshold are kept, so ties at the threshold all survive. A task that does not target a
    matrix is zero there, takes no part in the vote and does not count towards its numel (our
    choice; the reference assumes every task targets the same matrices). k = 0 keeps nothing.

    Memory: ``prepare`` holds one dense matrix of one task at a time (plus bit histograms of 2¹⁵
    and 2¹⁶ counters); ``merge`` holds about five n×m float32 buffers whatever the number of tasks,
    rebuilding each task's trimmed matrix twice instead of stacking all N.
    """

    name = "ties"
    description = "TIES-Merging: trim to top-k %, elect sign, disjoint mean (×λ)."
    params = (
        Param("k", 20.0, "percent of each task's entries kept by the trim (0–100)"),
        Param("trim", "global", "threshold over all of a task's matrices (global) or per matrix (local)",
              ("global", "local")),
        Param("lam", 1.0, "scaling λ of the merged delta"),
    )
    lowrank = False

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.thresholds: list[float] | None = None  # per task, set by prepare for trim=global

    def validate(self) -> None:
        if not 0.0 <= self.k <= 100.0:
            raise ValueError(f"ties: parameter 'k' is a percent in [0, 100], got {self.k}")

    def prepare(self, modules: ModuleStream) -> None:
        if self.trim == "global":
            self.thresholds = global_thresholds(modules, self.k, lambda t, key, d: dense32(d))

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        thresholds = self._thresholds(len(deltas))
        local: dict[int, float] = {}  # ties_combine asks for each task twice: select once

        def trimmed(t: int) -> Tensor:
            x = dense32(deltas[t])
            if thresholds is not None:
                return trim(x, thresholds[t])
            if t not in local:
                local[t] = local_threshold(x, self.k)
            return trim(x, local[t])

        return self.lam * ties_combine(trimmed, len(deltas))

    def _thresholds(self, n_tasks: int) -> list[float] | None:
        if self.trim == "local":
            return None
        if self.thresholds is None:
            raise ValueError("ties with trim=global needs prepare(modules) before merge (the per-task thresholds)")
        if len(self.thresholds) != n_tasks:
            raise ValueError(f"ties: prepare saw {len(self.thresholds)} tasks but merge got {n_tasks} deltas")
        return self.thresholds
