"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024; rezazzr/breadcrumbs)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import TA_GRID, MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta

# Rows handled per block: bounds the selection temporaries (topk keeps values and int64 indices).
BLOCK_ELEMENTS = 1 << 18


def _sorted_rank_mask(rows: Tensor, g: int, b: int) -> Tensor:
    """The mask by ranks g … g + b − 1 of a stable descending sort of |rows| (the definition)."""
    import torch

    m = rows.shape[-1]
    keep = torch.zeros(m, dtype=torch.bool, device=rows.device)
    keep[g:g + b] = True  # by rank
    order = torch.sort(rows.abs(), dim=-1, descending=True, stable=True).indices
    return torch.zeros(rows.shape, dtype=torch.bool, device=rows.device).scatter_(-1, order, keep.expand_as(order))


def _rank_window(block: Tensor, g: int, b: int) -> Tensor:
    """Float 0/1 mask of the entries ranked g … g + b − 1 by |x| in each row of a 2-d block.

    Why not a full sort: only two order statistics per row are needed. ``topk`` (unsorted) finds
    the g + b largest; their minimum is lo = the (g + b)-th largest and their b-th smallest is
    hi = the (g + 1)-th largest. When exactly g + b entries are ≥ lo and exactly g are > hi, no tie
    straddles either boundary and the window is lo ≤ |x| ≤ hi whatever the tie order. Rows where a
    tie does straddle one fall back to the stable sort, so the result is always the definition's.
    """
    import torch

    ab = block.abs()
    top = torch.topk(ab, g + b, dim=-1, sorted=False).values
    lo = top.amin(dim=-1, keepdim=True)
    hi = torch.kthvalue(top, b, dim=-1, keepdim=True).values
    at_least_lo = torch.ge(ab, lo, out=torch.empty_like(ab))  # float 0/1: bool outputs are a slow path
    above_hi = torch.gt(ab, hi, out=torch.empty_like(ab))
    clean = (at_least_lo.sum(dim=-1) == g + b) & (above_hi.sum(dim=-1) == g)
    window = at_least_lo.sub_(above_hi)  # hi ≥ lo, so "above hi" ⊂ "at least lo"
    if not bool(clean.all()):
        bad = (~clean).nonzero().flatten()
        window[bad] = _sorted_rank_mask(block[bad], g, b).to(window.dtype)
    return window


def breadcrumb_window(x: Tensor, gamma: float, beta: float) -> Tensor:
    """``breadcrumb_mask`` as a float32 0/1 tensor (what the merge multiplies by)."""
    import torch

    from ..numerics import COMPUTE_DTYPE
    from .ops import count_of

    m = x.shape[-1] if x.ndim else 1
    g, b = count_of(m, gamma), count_of(m, beta)
    rows = x.reshape(-1, m).to(COMPUTE_DTYPE)
    if b == 0 or g >= m:
        return torch.zeros(x.shape, dtype=COMPUTE_DTYPE, device=x.device)
    b = min(b, m - g)
    step = max(1, BLOCK_ELEMENTS // m)
    window = torch.empty(rows.shape, dtype=COMPUTE_DTYPE, device=x.device)
    for start in range(0, rows.shape[0], step):
        window[start:start + step] = _rank_window(rows[start:start + step], g, b)
    return window.reshape(x.shape)


def breadcrumb_mask(x: Tensor, gamma: float, beta: float) -> Tensor:
    """Per row of ``x`` (last dim, length m): True on the entries ranked g … g + b − 1 by |x|.

    g = ⌊m·γ⌋ largest entries are dropped (outliers), the next b = ⌊m·β⌋ kept, the rest dropped.
    Both counts round down, as the reference's ``int(m·γ)``, with γ and β read as the decimals they
    were written as (see ``ops.count_of``), so 0.29 of 100 is 29, not 28. Ranks are those of a
    stable descending sort of |x|: among equal magnitudes the lower column index ranks first, so
    the mask is deterministic on any device (the reference's ``topk`` leaves ties unspecified).
    A 1-d tensor is one row. (Computed by selection, not a full sort: see ``_rank_window``.)
    """
    return breadcrumb_window(x, gamma, beta) > 0


class Breadcrumbs(MergeMethod):
    """Breadcrumbs: per row of each task matrix drop the top γ and the bottom 1 − γ − β by |x|.

    Δ* = λ Σ_t (M_t ⊙ τ_t) with M_t from ``breadcrumb_mask`` (per row, as the reference; mergekit
    masks per tensor). No rescale of the kept entries. A task that does not target the matrix is
    zero there and adds nothing.

    Memory: the output, plus per row block (≤ 2¹⁸ entries) one task's rows, their mask and the
    selection temporaries; never a whole dense task matrix, never all N tasks at once.
    """

    name = "breadcrumbs"
    description = "Model Breadcrumbs: per row drop the top-γ outliers and the small tail, keep β; λ Σ masked τ_t."
    params = (
        Param("gamma", 0.01, "fraction of each row dropped from the top by magnitude (outliers)"),
        Param("beta", 0.1, "fraction of each row kept after the top γ", grid=(0.1, 0.05, 0.15, 0.2)),
        Param("lam", 0.4, "scaling λ of the summed masked task vectors", grid=TA_GRID),
    )
    search = ("lam", "beta")
    lowrank = False

    def validate(self) -> None:
        if self.gamma < 0 or self.beta < 0 or self.gamma + self.beta > 1:
            raise ValueError(
                "breadcrumbs: need gamma ≥ 0, beta ≥ 0 and gamma + beta ≤ 1, "
                f"got gamma={self.gamma}, beta={self.beta}"
            )

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        import torch

        from ..numerics import COMPUTE_DTYPE
        from .factor import device_of, shape_of
        from .ops import TaskRows, is_zero, row_slices

        shape = shape_of(deltas, key)
        n, m = shape
        tasks = [TaskRows(d) for d in deltas if not is_zero(d)]  # an absent task adds nothing
        total = torch.zeros(shape, dtype=COMPUTE_DTYPE, device=device_of(deltas[0]))
        for rows in row_slices(n, m, BLOCK_ELEMENTS):
            block = total[rows]
            for task in tasks:
                x = task.rows(rows)
                block += x.mul_(breadcrumb_window(x, self.gamma, self.beta))  # +0.0 + (x·0) is +0.0
        return total.mul_(self.lam)

    def masked(self, delta: Delta) -> Tensor:
        """M_t ⊙ τ_t for one task's matrix, dense float32."""
        import torch

        from .ops import dense32

        x = dense32(delta)
        return torch.where(breadcrumb_mask(x, self.gamma, self.beta), x, torch.zeros_like(x))
