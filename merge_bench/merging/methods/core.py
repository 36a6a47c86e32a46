"""Core Space (Panariello, Marczak et al., NeurIPS 2025; apanariello4/core-space-merging ``task_merger.py``,
``MatrixPerLayerMerger.get_core_matrices``): any merge rule, run on R×R cores built from stacked LoRA factors.

With B_cat = [B_1 … B_T] (n × R, R = Σ r_t) and A_cat = [A_1; …; A_T] (R × m), the reference bases are
U_B = the left singular vectors of B_cat and V_A = the right singular vectors of A_cat. Each task becomes
the core M_t = U_Bᵀ·B_t·A_t·V_Aᵀ (R × R, exactly τ_t = U_B·M_t·V_A); a merge rule runs on {M_t} as if they
were the task matrices, and the merged core M is lifted: Δ* = U_B·M·V_A, a LoRA of rank ≤ R.

Lossless for linear rules (core_task_arithmetic equals task_arithmetic). For rules that act on entries
(TIES, DARE) the result depends on the basis: the reference's, the singular vectors of the *raw* stacked
factors, is used for LoRA inputs. That basis depends on how each τ_t is split into B_t·A_t (B·G, G⁻¹·A
gives the same τ_t but another basis); sign flips of singular vectors change nothing (trimming, sign
election and random masks are equivariant to them). A dense input (a full fine-tune) has no factors: it
is split in the balanced way, B_t = U_t·Σ_t^½, A_t = Σ_t^½·V_tᵀ over its numerically non-zero singular
values (``balanced``), so dense inputs get the same basis as LoRA inputs given in balanced form.

Decisions: the inner rule keeps merge-bench's own defaults (``core_ties`` trims globally like ``ties``;
the reference's core TIES trims each matrix), so ``<m>`` and ``core_<m>`` differ only in the space.
Constants that depend on the matrix size take the core's (TSV's ⌊p/T⌋ and CART's k = ⌈ρ·p⌉ use
p = min(k_B, k_A) ≤ R), as the reference runs its rules on the cores. The LoRA scale is folded into B_t
(the reference applies one scale to the merged update; with equal scales the bases are the same).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .base import MergeMethod, ModuleStream

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta, LowRank


def balanced(d: Delta, shape: tuple[int, int]) -> LowRank:
    """A LowRank stays as given; a dense τ = U·Σ·Vᵀ becomes (U·Σ^½, Σ^½·Vᵀ) over its non-zero σ, each
    singular pair's sign fixed so that the largest-magnitude entry of its column of U is positive."""
    import torch

    from ..delta import LowRank, svd
    from ..numerics import COMPUTE_DTYPE
    from .factor import nonzero_count

    if isinstance(d, LowRank):
        return d
    U, S, Vh = svd(d)
    k = nonzero_count(S, shape)
    U, Vh = U[:, :k], Vh[:k]
    # Signs fixed (the largest |entry| of each column of U positive): RobustMerge's cross terms see them.
    sign = torch.where(U.gather(0, U.abs().argmax(dim=0, keepdim=True))[0] < 0, -1.0, 1.0).to(S.dtype)
    root = sign * S[:k].sqrt()  # on both sides: sign² = 1
    return LowRank((U * root).to(COMPUTE_DTYPE), (root[:, None] * Vh).to(COMPUTE_DTYPE))


@dataclass
class CoreBasis:
    """τ_t = U_B·cores[t]·V_A for one matrix, with U_B = B_cat·WB (n×k_B) and V_Aᵀ = A_catᵀ·WA (m×k_A)
    orthonormal, B_cat and A_cat the stacked factors (``stack``; not held, they are the inputs)."""

    WB: Tensor  # R × k_B (SVD_DTYPE)
    WA: Tensor  # R × k_A
    parts: list[LowRank]  # each core as (U_Bᵀ·B_t)·(A_t·V_Aᵀ), k_B × r_t and r_t × k_A, COMPUTE_DTYPE

    @property
    def cores(self) -> list[Tensor]:
        """The dense k_B × k_A cores, for rules that act on entries."""
        return [p.dense() for p in self.parts]

    @property
    def empty(self) -> bool:
        return self.WB.shape[1] == 0 or self.WA.shape[1] == 0

    def lift(self, M: Delta, B: Tensor, A: Tensor) -> LowRank:
        """U_B·M·V_A as a LowRank of rank min(k_B, k_A) at most (M's own factors when it is one)."""
        from ..delta import LowRank
        from ..numerics import COMPUTE_DTYPE, SVD_DTYPE

        if isinstance(M, LowRank):
            left, right = M.B.to(SVD_DTYPE), M.A.to(SVD_DTYPE)
        elif self.WB.shape[1] <= self.WA.shape[1]:
            left, right = None, M.to(SVD_DTYPE)
        else:
            left, right = M.to(SVD_DTYPE), None
        UB = B @ (self.WB if left is None else self.WB @ left).to(COMPUTE_DTYPE)
        WA = self.WA if right is None else self.WA @ right.T
        return LowRank(UB, (WA.T.to(COMPUTE_DTYPE) @ A).contiguous())


def side_basis(F: Tensor) -> tuple[Tensor, Tensor]:
    """(W, C) with U = F·W the left singular vectors of F (n×R) at its numerical rank, C = Uᵀ·F (k×R)."""
    import torch

    from ..delta import span

    Wq, Cq = span(F)
    if Cq.shape[0] == 0:
        return Wq, Cq
    P, S, _ = torch.linalg.svd(Cq, full_matrices=False)
    return Wq @ P, P.T @ Cq


def stack(deltas: list[Delta], shape: tuple[int, int]) -> tuple[Tensor, Tensor, list[int]]:
    """B_cat = [B_1 … B_T] (n×R), A_cat = [A_1; …; A_T] (R×m) and the ranks r_t (dense inputs split by
    ``balanced``)."""
    import torch

    from ..numerics import COMPUTE_DTYPE

    factors = [balanced(d, shape) for d in deltas]
    B = torch.cat([f.B.to(COMPUTE_DTYPE) for f in factors], dim=1)
    A = torch.cat([f.A.to(COMPUTE_DTYPE) for f in factors], dim=0)
    return B, A, [f.rank for f in factors]


def core_basis(B: Tensor, A: Tensor, ranks: list[int]) -> CoreBasis:
    """The reference's bases and the cores of the tasks whose factors are stacked in B and A."""
    from ..delta import LowRank
    from ..numerics import COMPUTE_DTYPE

    WB, CB = side_basis(B)
    WA, CA = side_basis(A.T)
    parts, start = [], 0
    for r in ranks:
        J = slice(start, start + r)
        parts.append(LowRank(CB[:, J].to(COMPUTE_DTYPE), CA[:, J].T.to(COMPUTE_DTYPE)))
        start += r
    return CoreBasis(WB, WA, parts)


class CoreSpace(MergeMethod):
    """Base of the ``core_<method>`` variants: ``inner`` (a registered method class) runs on the cores.

    The bases found while the inner rule's ``prepare`` streams the cores (TIES's global trim reads them
    three times) are kept for ``merge``: the small WB, WA and per-task core factors, about 1 MB per
    4096-wide matrix of 12 rank-16 tasks; the stacked factors are the inputs and are not held.
    """

    inner: ClassVar[type[MergeMethod]]
    lowrank = True

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.rule = self.inner(**self.config)
        self.bases: dict[str, CoreBasis] = {}

    @classmethod
    def search_grid(cls, config: dict[str, Any] | None = None) -> list[tuple[str, tuple]]:
        return cls.inner.search_grid(config)

    def prepare(self, modules: ModuleStream) -> None:
        from .factor import shape_of

        bases: dict[str, CoreBasis] = {}

        def cores():
            for key, deltas in modules():
                if key not in bases:
                    bases[key] = core_basis(*stack(deltas, shape_of(deltas, key)))
                yield key, bases[key].cores

        self.rule.prepare(cores)
        self.bases = bases

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from ..delta import LowRank
        from .factor import device_of, shape_of

        shape = shape_of(deltas, key)
        B, A, ranks = stack(deltas, shape)
        basis = self.bases.get(key) or core_basis(B, A, ranks)
        if basis.empty:
            return LowRank.zeros(*shape, device=device_of(deltas[0]))
        # A factor-space rule gets the cores as LowRanks (its fast path), an entry-wise one dense cores.
        return basis.lift(self.rule.merge(basis.parts if self.inner.lowrank else basis.cores, key), B, A)


def core_variant(inner: type[MergeMethod]) -> type[MergeMethod]:
    """The registered ``core_<inner.name>`` class: the same parameters, grid and search order."""
    attrs = {
        "name": f"core_{inner.name}",
        "description": f"Core Space: {inner.name} run on the R×R cores of the stacked LoRA factors, lifted back.",
        "params": inner.params,
        "search": inner.search,
        "inner": inner,
        "__doc__": f"``{inner.name}`` in Core Space (see ``merging.methods.core``).",
        "__module__": __name__,
    }
    return type(f"Core{inner.__name__}", (CoreSpace,), attrs)
