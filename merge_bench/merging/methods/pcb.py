"""PCB-Merging: parameter competition balancing (Du et al., NeurIPS 2024, arXiv 2410.02396;
duguodong7/pcb-merging ``pcb-merging.py``, and the per-matrix use in ZhengbaoHe/compress-then-merge
``task_merger.py: get_pcb_delta_w`` / ``merging_functions.py: PCB_merge``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta

CLIP = 0.0001  # both tails of |τ_t| clipped at 0.01 %, as the reference


def sorted_at(x: Tensor, index: int) -> float:
    """The reference's ``sorted(x)[index]`` (0-based, ascending) without sorting: a k-th smallest."""
    return float(x.reshape(-1).kthvalue(index + 1).values)


def minmax(x: Tensor, low: float, high: float) -> Tensor:
    """(x − low)/(high − low) in place; all zeros when high == low (the reference would divide by 0)."""
    if high <= low:
        return x.zero_()
    return x.sub_(low).div_(high - low)


class PCB(MergeMethod):
    """Δ* = λ·Σ_t β̂_t ⊙ τ̂_t / Σ_t β̂_t per entry, one weight matrix at a time.

    Per task t (d entries): |τ_t| clipped to its sorted values at ⌊0.0001·d⌋ and ⌊0.9999·d⌋ − 1
    (τ̂_t keeps the sign); intra-balancing exp(T·minmax(|τ̂_t|)²); inter-balancing tanh(τ_t ⊙ Σ_s τ_s);
    β_t = their product, floored at its sorted value at ⌊(1 − ``ratio``)·d⌋ and min-max normalised, so
    β̂_t is 0 outside the top ``ratio`` fraction of entries; the merge divides by max(Σ_t β̂_t, 1e-12).

    Defaults: ``ratio`` 0.1 (the reference function's ``pcb_ratio``; its scripts use 0.05), λ 1.2 (the
    reference's script); its optional Nevergrad search of per-task λ on validation data is left out
    (the tuned track searches λ and the ratio instead). Decisions: the reference flattens the whole
    model into one vector per task; we balance each weight matrix on its own, as the Compress-then-Merge
    code applies PCB to LoRA updates (exact whole-model quantiles of β would need every dense τ_t of
    every layer at once). Dense and entry-wise: the output is a full-rank matrix. A task that does not
    target the matrix takes no part.

    Memory: Σ_s τ_s, the running numerator and denominator, and one task's τ_t and β_t at a time (five
    n×m float32 buffers; each τ_t is rebuilt from its factors when needed).
    """

    name = "pcb"
    description = "PCB-Merging: intra- and inter-task balancing weights per entry, top fraction kept, weighted mean."
    params = (
        Param("ratio", 0.1, "fraction of each task's entries kept by the balancing weights", grid=(0.1, 0.05, 0.2)),
        Param("lam", 1.2, "scaling λ of the merged update", grid=(1.2, 0.8, 1.0, 1.5, 2.0)),
    )
    search = ("lam", "ratio")
    lowrank = False

    def validate(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"pcb: ratio must be in (0, 1], got {self.ratio}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        import torch

        from .factor import shape_of
        from .ops import dense32, is_zero

        shape = shape_of(deltas, key)
        live = [d for d in deltas if not is_zero(d)]
        if not live:
            return torch.zeros(shape, dtype=torch.float32)
        d = shape[0] * shape[1]
        total = dense32(live[0]).clone()
        for x in live[1:]:
            total += dense32(x)
        num, den = torch.zeros_like(total), torch.zeros_like(total)
        for x in live:
            tau = dense32(x)
            mag = tau.abs()
            low, high = sorted_at(mag, min(int(d * CLIP), d - 1)), sorted_at(mag, int(d * (1 - CLIP) - 1))
            mag.clamp_(low, high)
            clipped = mag.mul(torch.sign(tau))          # τ̂_t
            beta = minmax(mag, low, high).square_().mul_(len(live)).exp_()
            beta.mul_(torch.tanh(tau * total))
            floor = sorted_at(beta, min(int(d * (1 - self.ratio)), d - 1))
            beta = minmax(beta.clamp_(min=floor), floor, float(beta.max()))
            num += beta * clipped
            den += beta
        return num.div_(den.clamp_(min=1e-12)).mul_(self.lam)
