"""KnOTS: align LoRA task updates in a shared SVD basis, then merge (Stoica et al., ICLR 2025; gstoica27/KnOTS)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, ModuleStream, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors

SIGMA_FLOOR = 1e-5  # the reference keeps σ > 1e-5 of the float64 joint SVD


def knots_basis(deltas: list[Delta]) -> tuple[Tensor, list[Tensor]]:
    """U (n×k, float64) and per task the left factor P_t of Y_t = P_t·M_t: (Uᵀ B_t, A_t) or (Uᵀ, τ_t).

    X = [τ_1 | … | τ_T] = U Σ [V_1ᵀ | … | V_Tᵀ]; Y_t = Σ V_tᵀ = Uᵀ τ_t, i.e. (Uᵀ B_t)·A_t for LoRA.
    """
    from ..delta import LowRank
    from ..numerics import SVD_DTYPE
    from .factor import joint_column_svd

    U, S = joint_column_svd(deltas)
    U = U[:, S > SIGMA_FLOOR]
    return U, [U.T @ d.B.to(SVD_DTYPE) if isinstance(d, LowRank) else U.T for d in deltas]


def task_block(P: Tensor, d: Delta, out: Tensor | None = None) -> Tensor:
    """Y_t = P_t·M_t in COMPUTE_DTYPE (k × m).

    For a LoRA, M_t = A_t has r_t ≪ k rows: the float32 product of the float64 P_t rounded to
    float32 is as accurate as the float32 result can be stored, and avoids a float64 k×m temporary.
    """
    import torch

    from ..delta import LowRank
    from ..numerics import COMPUTE_DTYPE, SVD_DTYPE

    if isinstance(d, LowRank):
        return torch.matmul(P.to(COMPUTE_DTYPE), d.A.to(COMPUTE_DTYPE), out=out)
    Y = (P @ d.to(SVD_DTYPE)).to(COMPUTE_DTYPE)
    return Y if out is None else out.copy_(Y)


class Knots(MergeMethod):
    """Δ* = α·U·Ȳ, Ȳ = TIES (or DARE + sign election) of the per-task blocks Y_t = Uᵀτ_t.

    U comes from the joint SVD of [τ_1 | … | τ_T] (σ > 1e-5 kept), found in core space for LoRA
    inputs (``factor.merge_factors``), so the output is a LowRank of rank ≤ Σ r_t. ``merge = ties``: per task, keep the entries of Y_t with
    |y| ≥ the ⌊numel_t·k/100⌋-th largest |y| over all of that task's blocks in every layer
    (computed in ``prepare``, stored in ``thresholds``), elect signs by the sum, disjoint mean.
    ``merge = dare``: per task and entry drop with probability ``drop_rate`` and rescale survivors by
    1/(1 − p) (the reference then runs TIES with top-k = 100 %), elect signs, disjoint mean.

    Decisions where the spec is silent: numel_t counts only the matrices where τ_t ≠ 0 (the task's
    targeted matrices, as our ``ties``); DARE masks are ``dare.drop_mask``'s (seeded by seed, task and
    matrix key, so independent of merge order); ``drop_rate`` defaults to 0.5 like our ``dare`` method (the
    reference configs tune it per model).
    """

    name = "knots"
    description = "KnOTS: joint-SVD alignment of the task updates, then TIES or DARE on the aligned blocks."
    params = (
        Param("merge", "ties", "how the aligned per-task blocks are merged", ("ties", "dare")),
        Param("k", 20.0, "ties: percent of each task's entries kept, over all layers together",
              grid=(20.0, 30.0, 40.0)),
        Param("drop_rate", 0.5, "dare: drop probability p of each aligned entry"),
        Param("seed", 0, "dare: seed of the drop masks"),
        Param("alpha", 1.0, "scaling α of the merged update", grid=(1.0, 0.4, 0.6, 0.8)),
    )
    search = ("alpha", "k")
    lowrank = True

    def validate(self) -> None:
        if not 0.0 < self.k <= 100.0:
            raise ValueError(f"knots: k must be in (0, 100], got {self.k}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"knots: drop_rate must be in [0, 1), got {self.drop_rate}")

    def prepare(self, modules: ModuleStream) -> None:
        from ..delta import all_lowrank
        from ..selection import kth_largest_abs_many
        from .factor import densify, reduce, shape_of
        from .ops import is_zero, percent_count

        if self.config["merge"] != "ties":
            return
        # One pass for the sizes and the small left factors (Σ r_t × Σ r_t per LoRA matrix); the two
        # passes per task of kth_largest_abs then only multiply P_t by A_t. Dense inputs are not cached.
        cache: dict[str, list[Tensor]] = {}
        numel: list[int] | None = None
        for key, deltas in modules():
            shape_of(deltas, key)
            if numel is None:
                numel = [0] * len(deltas)
            elif len(deltas) != len(numel):
                raise ValueError(f"knots: matrix {key!r} has {len(deltas)} task vectors, expected {len(numel)}")
            lowrank = all_lowrank(deltas)
            U, P = knots_basis(reduce(deltas, right=False).deltas if lowrank else densify(deltas))
            if lowrank:
                cache[key] = P
            for t, d in enumerate(deltas):
                if not is_zero(d):
                    numel[t] += U.shape[1] * d.shape[1]
        if numel is None:
            raise ValueError("knots: the module stream is empty; there is nothing to merge")

        def blocks():  # every task's blocks in one sweep: the selection runs for all tasks at once
            for key, deltas in modules():
                if key not in cache:
                    deltas = densify(deltas)
                P = cache[key] if key in cache else knots_basis(deltas)[1]
                for t, d in enumerate(deltas):
                    if not is_zero(d):
                        yield t, task_block(P[t], d)

        self.thresholds = kth_largest_abs_many(blocks, [percent_count(n, self.k) for n in numel])

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from .factor import merge_factors, shape_of

        shape = shape_of(deltas, key)
        if self.config["merge"] == "ties":
            thresholds = self.__dict__.get("thresholds")
            if thresholds is None:
                raise ValueError("knots (merge=ties): call prepare() on the module stream before merge()")
            if len(thresholds) != len(deltas):
                raise ValueError(f"knots: matrix {key!r} has {len(deltas)} task vectors, prepare() saw {len(thresholds)}")
        # U is the only orthogonally equivariant side: reduce that one to core space.
        return merge_factors(deltas, shape, lambda ds: self.factors(ds, key), reduce_sides="left")

    def factors(self, deltas: list[Delta], key: str) -> Factors | None:
        import torch

        from ..numerics import COMPUTE_DTYPE
        from .dare import drop_mask
        from .ops import disjoint_mean_, stacked_sum, trim_

        U, P = knots_basis(deltas)
        if U.shape[1] == 0:
            return None
        Y = torch.empty((len(deltas), U.shape[1], deltas[0].shape[1]), dtype=COMPUTE_DTYPE, device=U.device)
        for t, (p, d) in enumerate(zip(P, deltas)):
            task_block(p, d, out=Y[t])
        if self.config["merge"] == "ties":
            for t, thr in enumerate(self.thresholds):
                trim_(Y[t], thr)
        else:
            for t in range(Y.shape[0]):
                dropped = drop_mask(Y.shape[1:], self.drop_rate, self.seed, t, key).to(Y.device)
                Y[t] = torch.where(dropped, torch.zeros_like(Y[t]), Y[t] / (1.0 - self.drop_rate))
        Ybar = disjoint_mean_(Y, torch.sign(stacked_sum(Y)))
        return self.alpha * U, Ybar
