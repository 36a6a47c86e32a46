"""DARE, drop and rescale (Yu et al. 2024, "Language Models are Super Mario"; yule-BUAA/MergeLM)."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .base import TA_GRID, MergeMethod, ModuleStream, Param

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ..delta import Delta


def mask_seed(seed: int, task: int, key: str) -> int:
    """A 63-bit generator seed from (seed, task index, matrix key), stable across runs and machines.

    Python's ``hash()`` of a str is salted per process, so it would change the masks from run to run.
    """
    digest = hashlib.blake2b(f"{seed}\x00{task}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def drop_mask(shape: torch.Size, p: float, seed: int, task: int, key: str) -> Tensor:
    """Boolean mask of the dropped entries: each entry independently with probability p.

    The uniforms come from a CPU generator seeded by ``mask_seed``, then move to the data's
    device: the same masks on any device, and independent of the order matrices are visited.
    """
    import torch

    gen = torch.Generator(device="cpu").manual_seed(mask_seed(seed, task, key))
    return torch.rand(shape, generator=gen, dtype=torch.float32) < p


class Dare(MergeMethod):
    """DARE: per task and entry drop with probability p, rescale survivors by 1/(1 − p), combine.

    ``combine``: ``avg`` (the default, as MergeLM) Δ* = (1/N) Σ_t τ̃_t; ``task_arithmetic``
    Δ* = λ Σ_t τ̃_t; ``ties`` trims the dropped τ̃_t to their top-k %, elects signs and takes the
    disjoint mean with λ = 1 as our ``ties`` (``lam`` applies to task_arithmetic only). The trim is
    ``global`` by default (one threshold per task over all its dropped matrices, as MergeLM's
    ties_merging flattens the whole model, and as our ``ties``), ``local`` per matrix on request.
    A task's targeted-entry count includes its dropped entries (they are zeros of a targeted matrix).

    Masks are a pure function of (seed, task index, matrix key), so the same seed gives the same
    merge, whatever order the engine visits matrices in, and whichever device runs the maths.

    Memory: per matrix, one task's dense matrix, its n×m float32 uniforms and boolean mask, plus
    the running sum (avg, task_arithmetic) or the ties_combine buffers (about five n×m float32);
    never all N tasks at once. With ``combine=ties`` each task's mask is drawn twice per merge (and
    twice more per prepare pass) rather than stored.
    """

    name = "dare"
    description = "DARE: random drop with probability p and 1/(1−p) rescale, then avg, task arithmetic or TIES."
    params = (
        Param("p", 0.5, "drop probability per entry", grid=(0.5, 0.3, 0.7, 0.9)),
        Param("rescale", True, "rescale surviving entries by 1/(1 − p)"),
        Param("combine", "avg", "how to combine the dropped task vectors", ("avg", "task_arithmetic", "ties")),
        Param("lam", 0.4, "scaling λ for combine=task_arithmetic", grid=TA_GRID),
        Param("k", 20.0, "combine=ties: percent of entries kept by the trim (0–100)"),
        Param("trim", "global", "combine=ties: threshold over all of a task's matrices or per matrix",
              ("global", "local")),
        Param("seed", 0, "seed of the drop masks"),
    )
    search = ("lam", "p")
    lowrank = False

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.thresholds: list[float] | None = None  # combine=ties, trim=global: per task, from prepare

    @classmethod
    def search_grid(cls, config: dict[str, Any] | None = None) -> list[tuple[str, tuple]]:
        """λ scales only ``combine=task_arithmetic``: at the default ``avg`` (and ``ties``) the search
        skips it rather than spend evaluations on merges that are all the same."""
        grid = super().search_grid(config)
        combine = (config or {}).get("combine", "avg")
        return [(name, values) for name, values in grid if name != "lam" or combine == "task_arithmetic"]

    def validate(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"dare: parameter 'p' is a probability in [0, 1], got {self.p}")
        if self.rescale and self.p == 1.0:
            raise ValueError("dare: p = 1 drops everything and cannot be rescaled by 1/(1 − p); set rescale=false")
        if not 0.0 <= self.k <= 100.0:
            raise ValueError(f"dare: parameter 'k' is a percent in [0, 100], got {self.k}")

    def dropped(self, task: int, key: str, delta: Delta) -> Tensor:
        """τ̃_t for one matrix: τ_t with its dropped entries zeroed, survivors ÷ (1 − p) if rescaling."""
        from .ops import dense32

        x = dense32(delta)
        out = x.masked_fill(drop_mask(x.shape, self.p, self.seed, task, key).to(x.device), 0.0)
        if self.rescale:
            out /= 1.0 - self.p
        return out

    def prepare(self, modules: ModuleStream) -> None:
        from .ops import global_thresholds

        if self.combine == "ties" and self.trim == "global":
            self.thresholds = global_thresholds(modules, self.k, self.dropped)

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        n = len(deltas)
        if self.combine == "ties":
            return self._ties(deltas, key)
        weight = 1.0 / n if self.combine == "avg" else self.lam
        total = self.dropped(0, key, deltas[0])
        for t in range(1, n):
            total += self.dropped(t, key, deltas[t])
        return total * weight

    def _ties(self, deltas: list[Delta], key: str) -> Tensor:
        from .ops import local_threshold, ties_combine, trim

        if self.trim == "global":
            if self.thresholds is None:
                raise ValueError("dare with combine=ties, trim=global needs prepare(modules) before merge")
            if len(self.thresholds) != len(deltas):
                raise ValueError(f"dare: prepare saw {len(self.thresholds)} tasks but merge got {len(deltas)} deltas")
        local: dict[int, float] = {}

        def trimmed(t: int) -> Tensor:
            x = self.dropped(t, key, deltas[t])
            if self.thresholds is not None and self.trim == "global":
                return trim(x, self.thresholds[t])
            if t not in local:
                local[t] = local_threshold(x, self.k)
            return trim(x, local[t])

        return ties_combine(trimmed, len(deltas))
