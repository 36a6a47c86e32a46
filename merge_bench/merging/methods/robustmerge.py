"""RobustMerge (Zeng et al., NeurIPS 2025, arXiv 2502.17159), as the authors' code does it:
AuroraZengfh/RobustMerge ``llava/model/builder.py``, ``load_and_merge_pretrained_model``."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta, LowRank


def keep_top(x: Tensor, keep: float) -> Tensor:
    """Per task (dim 0), the mask |x| ≥ the ⌊d·(1 − keep)⌋-th smallest |x| over its d entries (the
    reference's ``kthvalue(int(d1*d2*(1-mask_ratio)))``; ties at the threshold are kept)."""
    flat = x.abs().reshape(x.shape[0], -1)
    k = max(1, int(flat.shape[1] * (1.0 - keep)))
    kth = flat.kthvalue(k, dim=1, keepdim=True).values
    return (flat >= kth).reshape(x.shape)


def clamp_low(s: Tensor, ratio: float) -> Tensor:
    """Per task (row), values below the sorted value at index ⌊r·ratio⌋ are raised to it (the reference's
    ``clamp(s, 1 − att_ratio, 0)``; its upper bound is the row's maximum, a no-op)."""
    r = s.shape[1]
    low = s.sort(dim=1).values[:, min(int(r * ratio), r - 1)].unsqueeze(1)
    return s.clamp(min=low)


class RobustMerge(MergeMethod):
    """Factor-wise: A = w·Σ_t mask(A_t), B = w·Σ_t s_t ⊙ mask(B_t) / Σ_t s_t, a rank-r LoRA out.

    Per task t the top ``keep`` fraction (default 20 %, the reference's ``mask_ratio`` 0.2) of |A_t|'s
    entries and, separately, of |B_t|'s are kept. s_t (one value per rank row j) = ‖A_t[j]‖₁ /
    ‖mask(A_t)[j]‖₁, the mass the pruning removed from that row, then floored per task at its value of
    rank ⌊r·(1 − ``att_ratio``)⌋ in ascending order (``att_ratio`` 0.2: the lowest 80 % are raised to the
    80th percentile). B's column j is weighted by s_tj and normalised by Σ_t s_tj; w = ``fuse_weight``
    (2.0). The output B (n × r), A (r × m) is a LoRA of the inputs' rank: the cross terms B_i·A_j are part
    of the method.

    Which RobustMerge: the authors' code above. The Compress-then-Merge repository's re-implementation
    (``task_merger.py: robustmerge``) differs (a tunable top-k, s normalised across tasks, no 2.0, no
    floor); we follow the authors'. Decisions where theirs is silent: the LoRA scale s = α/r is folded
    into B (for equal scales the same update as theirs, which keeps one scale in the merged config);
    a dense input (a full fine-tune) is split in the balanced way (``core.balanced``); inputs of
    different ranks are zero-padded to the largest; a row of A_t with nothing kept (a padding row) has
    s = 1 before the floor; a task that does not target the matrix takes no part (it would otherwise
    add to Σ_t s_t). Only LoRA-targeted matrices are merged (the reference averages non-LoRA weights).
    """

    name = "robustmerge"
    description = "RobustMerge: per-factor top-k pruning, B columns rescaled by the pruned mass of A's rows."
    params = (
        Param("keep", 0.2, "fraction of each factor's entries kept per task (the reference's mask_ratio)",
              grid=(0.2, 0.1, 0.3, 0.5)),
        Param("att_ratio", 0.2, "the lowest (1 − att_ratio) of each task's row scales are raised to that quantile"),
        Param("fuse_weight", 2.0, "weight w of every task's pruned factors", grid=(2.0, 1.0, 1.5, 3.0)),
    )
    search = ("fuse_weight", "keep")
    lowrank = True

    def validate(self) -> None:
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"robustmerge: keep must be in (0, 1], got {self.keep}")
        if not 0.0 <= self.att_ratio <= 1.0:
            raise ValueError(f"robustmerge: att_ratio must be in [0, 1], got {self.att_ratio}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        import torch

        from ..delta import LowRank
        from ..numerics import COMPUTE_DTYPE
        from .core import balanced
        from .factor import device_of, shape_of
        from .ops import is_zero

        shape = shape_of(deltas, key)
        factors: list[LowRank] = [balanced(d, shape) for d in deltas if not is_zero(d)]
        r = max([f.rank for f in factors], default=0)
        if r == 0:
            return LowRank.zeros(*shape, device=device_of(deltas[0]))
        A = torch.zeros((len(factors), r, shape[1]), dtype=COMPUTE_DTYPE, device=device_of(deltas[0]))
        B = torch.zeros((len(factors), shape[0], r), dtype=COMPUTE_DTYPE, device=A.device)
        for t, f in enumerate(factors):
            A[t, : f.rank] = f.A
            B[t, :, : f.rank] = f.B
        A_kept = A * keep_top(A, self.keep)
        B_kept = B * keep_top(B, self.keep)
        pruned = A_kept.abs().sum(dim=-1)
        s = torch.where(pruned > 0, A.abs().sum(dim=-1) / torch.where(pruned > 0, pruned, 1.0), 1.0)
        s = clamp_low(s, 1.0 - self.att_ratio)
        merged_A = self.fuse_weight * A_kept.sum(dim=0)
        merged_B = self.fuse_weight * (B_kept * s[:, None, :]).sum(dim=0) / s.sum(dim=0)
        return LowRank(merged_B.contiguous(), merged_A.contiguous())

