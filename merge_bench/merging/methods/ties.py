"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MergeMethod, ModuleStream, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta


class Ties(MergeMethod):
    """TIES: per task keep the top-k % entries by magnitude, elect signs, take the disjoint mean, ×λ.

    Trim ``global`` (the default, as the IBM/STAR reference): one threshold per task, the
    ⌊numel·k/100⌋-th largest |x| over all matrices that task targets, found in ``prepare`` by an
    exact streaming selection. Trim ``local``: the same count and threshold per matrix. Entries with
    |x| ≥ threshold are kept, so ties at the threshold all survive. A task that does not target a
    matrix is zero there, takes no part in the vote and does not count towards its numel (our
    choice; the reference assumes every task targets the same matrices). k = 0 keeps nothing.

    Memory and speed: nothing holds a whole dense task matrix. ``prepare`` streams every task's τ
    a block of rows at a time (B[rows]·A) through the two passes of the exact selection, all tasks
    in the same two sweeps (plus bit histograms of 2¹⁵ and 2¹⁶ counters per task); ``merge`` builds
    each task's block once per row block, trims it in place and folds it into the sign election
    and disjoint mean (``ops.ties_merge_rows``), so it holds N cache-sized blocks and the output.
    """

    name = "ties"
    description = "TIES-Merging: trim to top-k %, elect sign, disjoint mean (×λ)."
    params = (
        Param("k", 20.0, "percent of each task's entries kept by the trim (0–100)", grid=(20.0, 10.0, 30.0)),
        Param("trim", "global", "threshold over all of a task's matrices (global) or per matrix (local)",
              ("global", "local")),
        Param("lam", 1.0, "scaling λ of the merged delta", grid=(1.0, 0.6, 0.8, 1.2, 1.5, 2.0)),
    )
    search = ("lam", "k")
    lowrank = False

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.thresholds: list[float] | None = None  # per task, set by prepare for trim=global

    def validate(self) -> None:
        if not 0.0 <= self.k <= 100.0:
            raise ValueError(f"ties: parameter 'k' is a percent in [0, 100], got {self.k}")

    def prepare(self, modules: ModuleStream) -> None:
        from .ops import TaskRows, global_thresholds

        if self.trim == "global":
            self.thresholds = global_thresholds(modules, self.k, pieces=lambda t, key, d: TaskRows(d).blocks(reuse=True))

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..selection import kth_largest_abs_many
        from .factor import device_of, shape_of
        from .ops import TaskRows, is_zero, percent_count, ties_merge_rows, trim_

        shape = shape_of(deltas, key)
        thresholds = self._thresholds(len(deltas))
        tasks = [TaskRows(d) for d in deltas]
        if thresholds is None:  # local: one exact selection per task over this matrix, in two sweeps
            k = percent_count(shape[0] * shape[1], self.k)
            thresholds = kth_largest_abs_many(
                lambda: ((t, x) for t, task in enumerate(tasks) for x in task.blocks(reuse=True)), [k] * len(tasks))
        live = [not is_zero(d) for d in deltas]

        def trimmed(t: int, rows: slice, out: Tensor) -> Tensor:
            if not live[t]:
                return out.zero_()
            return trim_(tasks[t].rows(rows, out), thresholds[t])

        return self.lam * ties_merge_rows(trimmed, len(deltas), shape, device_of(deltas[0]))

    def _thresholds(self, n_tasks: int) -> list[float] | None:
        if self.trim == "local":
            return None
        if self.thresholds is None:
            raise ValueError("ties with trim=global needs prepare(modules) before merge (the per-task thresholds)")
        if len(self.thresholds) != n_tasks:
            raise ValueError(f"ties: prepare saw {len(self.thresholds)} tasks but merge got {n_tasks} deltas")
        return self.thresholds
