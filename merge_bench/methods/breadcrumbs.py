"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024; rezazzr/breadcrumbs)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..delta import Delta
from .base import MergeMethod, Param
from .ops import count_of, dense32

# Rows sorted per block: bounds the int64 sort indices to 32 MiB whatever the matrix size.
BLOCK_ELEMENTS = 1 << 22


def breadcrumb_mask(x: Tensor, gamma: float, beta: float) -> Tensor:
    """Per row of ``x`` (last dim, length m): True on the entries ranked g … g + b − 1 by |x|.

    g = ⌊m·γ⌋ largest entries are dropped (outliers), the next b = ⌊m·β⌋ kept, the rest dropped.
    Both counts round down, as the reference's ``int(m·γ)``, with γ and β read as the decimals they
    were written as (see ``ops.count_of``), so 0.29 of 100 is 29, not 28. Ranks come from a stable
    descending sort of |x|: among equal magnitudes the lower column index ranks first, so the mask
    is deterministic on any device (the reference's ``topk`` leaves ties unspecified).
    A 1-d tensor is one row.
    """
    m = x.shape[-1] if x.ndim else 1
    g, b = count_of(m, gamma), count_of(m, beta)
    rows = x.reshape(-1, m)
    mask = torch.zeros(rows.shape, dtype=torch.bool, device=x.device)
    if b == 0 or g >= m:
        return mask.reshape(x.shape)
    keep = torch.zeros(m, dtype=torch.bool, device=x.device)
    keep[g:g + b] = True  # by rank
    step = max(1, BLOCK_ELEMENTS // m)
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        order = torch.sort(block.abs(), dim=-1, descending=True, stable=True).indices
        mask[start:start + step].scatter_(-1, order, keep.expand_as(order))
    return mask.reshape(x.shape)


class Breadcrumbs(MergeMethod):
    """Breadcrumbs: per row of each task matrix drop the top γ and the bottom 1 − γ − β by |x|.

    Δ* = λ Σ_t (M_t ⊙ τ_t) with M_t from ``breadcrumb_mask`` (per row, as the reference; mergekit
    masks per tensor). No rescale of the kept entries. A task that does not target the matrix is
    zero there and adds nothing.

    Memory: the running sum, one task's dense matrix and its boolean mask (three n×m buffers and a
    bit), plus the sort temporaries of one row block (≤ 2²² entries); never all N tasks at once.
    """

    name = "breadcrumbs"
    description = "Model Breadcrumbs: per row drop the top-γ outliers and the small tail, keep β; λ Σ masked τ_t."
    params = (
        Param("gamma", 0.01, "fraction of each row dropped from the top by magnitude (outliers)"),
        Param("beta", 0.1, "fraction of each row kept after the top γ"),
        Param("lam", 0.4, "scaling λ of the summed masked task vectors"),
    )
    lowrank = False

    def validate(self) -> None:
        if self.gamma < 0 or self.beta < 0 or self.gamma + self.beta > 1:
            raise ValueError(
                "breadcrumbs: need gamma ≥ 0, beta ≥ 0 and gamma + beta ≤ 1, "
                f"got gamma={self.gamma}, beta={self.beta}"
            )

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        total = self.masked(deltas[0])
        for d in deltas[1:]:
            total += self.masked(d)
        return total * self.lam

    def masked(self, delta: Delta) -> Tensor:
        """M_t ⊙ τ_t for one task's matrix, dense float32."""
        x = dense32(delta)
        return torch.where(breadcrumb_mask(x, self.gamma, self.beta), x, torch.zeros_like(x))
