"""Consensus Task Arithmetic with TALL masks (Wang et al., ICML 2024), as the IBM/STAR reference."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import TA_GRID, MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta


def tall_mask(tau: Tensor, mtl: Tensor, lam: float) -> Tensor:
    """Task t's TALL mask 1[ |τ_t| > λ |τ_MTL − τ_t| ] (strict), as a boolean tensor."""
    return tau.abs() > (mtl - tau).abs() * lam


class TallMasks(MergeMethod):
    """Consensus TA: keep the entries of τ_MTL = α Σ_t τ_t that at least k tasks deem important.

    m_t = 1[ |τ_t| > λ · |τ_MTL − τ_t| ] (strict, with the α-scaled τ_MTL, as the reference);
    M = 1[ Σ_t m_t ≥ k ]; Δ* = M ⊙ τ_MTL. One merged model for all tasks: the per-task masks are
    not used at evaluation. A task that does not target the matrix is zero there, so its m_t is 0
    (0 > λ·|τ_MTL| never holds): it never votes.

    Memory and speed: the output plus, per block of rows (``ops.BLOCK`` entries per task), the N
    tasks' rows, τ_MTL and the vote count: each task's rows are built once (B[rows]·A) and stay in
    cache for both the sum and the masks; no whole dense task matrix is ever held.
    """

    name = "tall_masks"
    description = "Consensus Task Arithmetic: α Σ τ_t masked to entries that ≥ k TALL masks keep."
    params = (
        Param("alpha", 0.4, "scaling α of the summed task vectors τ_MTL", grid=TA_GRID),
        Param("lam", 0.4, "TALL-mask λ: task t keeps entries with |τ_t| > λ |τ_MTL − τ_t|",
              grid=(0.4, 0.2, 0.3, 0.5, 0.6)),
        Param("k", 2, "consensus: keep entries kept by at least k task masks"),
    )
    lowrank = False

    def validate(self) -> None:
        if self.lam < 0:
            raise ValueError(f"tall_masks: parameter 'lam' must be ≥ 0, got {self.lam}")
        if self.k < 0:
            raise ValueError(f"tall_masks: parameter 'k' must be ≥ 0, got {self.k}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        import torch

        from ..numerics import COMPUTE_DTYPE
        from .factor import device_of, shape_of
        from .ops import TaskRows, row_slices, rows_per_block

        shape = shape_of(deltas, key)
        n, m = shape
        tasks = [TaskRows(d) for d in deltas]
        out = torch.empty(shape, dtype=COMPUTE_DTYPE, device=device_of(deltas[0]))
        step = rows_per_block(m)
        xs = torch.empty((len(tasks), min(step, n), m), dtype=COMPUTE_DTYPE, device=out.device)
        # Scratch buffers reused by every block: fresh MiB-sized temporaries cost more than the maths.
        mtl_buf, votes_buf, a_buf, b_buf = (torch.empty((min(step, n), m), dtype=COMPUTE_DTYPE, device=out.device)
                                            for _ in range(4))
        for rows in row_slices(n, m):
            h = rows.stop - rows.start
            taus = [task.rows(rows, xs[t, :h]) for t, task in enumerate(tasks)]
            mtl, votes, a, b = mtl_buf[:h], votes_buf[:h].zero_(), a_buf[:h], b_buf[:h]
            mtl.copy_(taus[0])
            for tau in taus[1:]:
                mtl += tau
            mtl *= self.alpha
            for tau in taus:
                # tall_mask's |τ_t| > λ·|τ_MTL − τ_t|, as float 0/1 (bool outputs are slow on CPU)
                torch.sub(mtl, tau, out=a).abs_().mul_(self.lam)
                votes += torch.gt(torch.abs(tau, out=b), a, out=b)
            out[rows] = torch.where(votes >= self.k, mtl, torch.zeros_like(mtl))
        return out
