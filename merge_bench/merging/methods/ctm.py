"""Compress-then-Merge, CtM (He et al., ICML 2026, arXiv 2606.03723; ZhengbaoHe/compress-then-merge
``task_merger.py``: ``get_low_rank_components_in_core_space`` and ``merge_space=low_rank_core``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MergeMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors

MAX_ITER = 1000  # the reference's partial_tucker(n_iter_max=1000, tol=1e-6, init="svd")
TOL = 1e-6


def top_eigvecs(G: Tensor, r: int) -> Tensor:
    """The eigenvectors of the r largest eigenvalues of the symmetric G, largest first: the top-r left
    singular vectors of any M with M·Mᵀ = G (half the cost of an SVD of M for the 192×192 stacks here)."""
    import torch

    return torch.linalg.eigh(G)[1][:, -r:].flip(1)


def tucker2(X: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Orthonormal U0 (a×r), U1 (b×r) of the Tucker-2 decomposition of the stack X (T×a×b) on its two
    matrix modes, by HOOI from the HOSVD (tensorly's ``partial_tucker`` with ``init="svd"``).

    HOSVD: U0 = top-r left singular vectors of [X_1 … X_T], U1 those of [X_1ᵀ … X_Tᵀ]. Each sweep updates
    U0 from [X_t·U1]_t, then U1 from [X_tᵀ·U0]_t; it stops when the relative reconstruction error
    √|‖X‖² − ‖core‖²|/‖X‖ changes by less than 1e-6, or after 1000 sweeps, as the reference.
    """
    import torch

    U0 = top_eigvecs(torch.einsum("tab,tcb->ac", X, X), r)
    U1 = top_eigvecs(torch.einsum("tab,tac->bc", X, X), r)
    norm_sq = float(X.pow(2).sum())
    previous = None
    for _ in range(MAX_ITER):
        Y = X @ U1
        U0 = top_eigvecs(torch.einsum("tar,tcr->ac", Y, Y), r)
        Z = X.mT @ U0
        U1 = top_eigvecs(torch.einsum("tbr,tcr->bc", Z, Z), r)
        core_sq = float((Z.mT @ U1).pow(2).sum())
        error = abs(norm_sq - core_sq) ** 0.5 / norm_sq ** 0.5
        if previous is not None and abs(previous - error) < TOL:
            break
        previous = error
    return U0, U1


class CtM(MergeMethod):
    """Δ* = α·U·merge({Uᵀ·τ_t·V})·Vᵀ with U (n×r), V (m×r) shared bases from a Tucker-2 decomposition.

    1. Rescale (``beta`` β): X_t = λ_t·τ_t/‖τ_t‖_F, λ_t = β·‖τ_t‖_F + (1 − β)·mean_s ‖τ_s‖_F (β = 1 keeps
       the norms, β = 0 gives every task the mean norm).
    2. U, V = Tucker-2 of the stack {X_t} on its two matrix modes at rank r (``tucker2``: HOSVD + HOOI).
    3. Coordinates O_t = Uᵀ·τ_t·V (r×r) of the *unscaled* τ_t; O = the inner rule (``merge``) on {O_t}:
       ``ties`` (per matrix, top-k % kept, sign election, disjoint mean: our ``ties`` with trim=local),
       ``dare_ties`` (our ``dare`` with combine=ties, trim=local, drop p, seeded) or ``task_arithmetic``
       (the sum).
    4. Δ* = α·U·O·Vᵀ: one rank-r LoRA (r = 16 by default, vLLM serves it with no truncation).

    LoRA inputs: the reference computes everything in Core Space; Tucker-2 and the coordinates commute with
    orthogonal changes of basis (up to signs of the singular vectors, which trimming, sign election and
    drop masks do not see), so this runs on the cores (``factor.merge_factors``) and equals the dense
    computation on the same τ_t. Defaults are the reference's NLI settings
    (``eval_scripts_clean/nli_pertask_linearsearch_layers.py``): TIES, top-k 30 %, α 0.9, DARE p 0.05,
    r = 16; β = 0.25 is its README's example. Decisions: tasks that do not target a matrix (τ_t = 0) are
    left out of the decomposition and of the mean norm (the reference would divide by zero) and enter the
    inner rule as zeros; r is capped at the joint ranks of the tasks.
    """

    name = "ctm"
    description = "Compress-then-Merge: shared rank-r Tucker-2 bases, inner TIES on the r×r coordinates."
    params = (
        Param("rank", 16, "rank r of the shared bases and of the merged LoRA"),
        Param("beta", 0.25, "β: rescaling of each task to β·‖τ_t‖ + (1 − β)·mean norm before the decomposition",
              grid=(0.25, 0.0, 0.5, 0.75)),
        Param("merge", "ties", "inner rule on the coordinates", ("ties", "dare_ties", "task_arithmetic")),
        Param("k", 30.0, "ties, dare_ties: percent of each task's coordinates kept"),
        Param("p", 0.05, "dare_ties: drop probability"),
        Param("seed", 0, "dare_ties: seed of the drop masks"),
        Param("alpha", 0.9, "scaling α of the merged update", grid=(0.9, 0.5, 1.2, 1.6, 2.0)),
    )
    search = ("alpha", "beta")
    lowrank = True

    def validate(self) -> None:
        if self.rank < 1:
            raise ValueError(f"ctm: rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"ctm: beta must be in [0, 1], got {self.beta}")
        if not 0.0 < self.k <= 100.0:
            raise ValueError(f"ctm: k must be in (0, 100], got {self.k}")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"ctm: p must be in [0, 1), got {self.p}")

    def merge(self, deltas: list[Delta], key: str) -> Delta:
        from .core import balanced
        from .factor import merge_factors, shape_of

        shape = shape_of(deltas, key)
        # A dense input (a full fine-tune) is factored exactly at its numerical rank first: the HOOI then
        # runs on the joint cores too, instead of on n × m matrices (the same maths: it is equivariant).
        deltas = [balanced(d, shape) for d in deltas]
        return merge_factors(deltas, shape, lambda ds: self.factors(ds, key, shape))

    def inner(self) -> MergeMethod:
        from .dare import Dare
        from .task_arithmetic import TaskArithmetic
        from .ties import Ties

        if self.config["merge"] == "ties":
            return Ties(k=self.k, trim="local", lam=1.0)
        if self.config["merge"] == "dare_ties":
            return Dare(p=self.p, combine="ties", k=self.k, trim="local", seed=self.seed)
        return TaskArithmetic(lam=1.0)

    def factors(self, deltas: list[Delta], key: str, ambient: tuple[int, int]) -> Factors | None:
        import torch

        from ..delta import dense
        from ..numerics import COMPUTE_DTYPE, SVD_DTYPE
        from .factor import as_dense, nonzero_count

        taus = [as_dense(d, SVD_DTYPE) for d in deltas]
        norms = [float(torch.linalg.matrix_norm(t)) for t in taus]
        live = [n > 0 for n in norms]
        if not any(live):
            return None
        mean = sum(n for n, ok in zip(norms, live) if ok) / sum(live)
        X = torch.stack([t * (self.beta + (1.0 - self.beta) * mean / n)
                         for t, n, ok in zip(taus, norms, live) if ok])
        # r at most the joint ranks: beyond them the bases would be arbitrary null directions
        r = min(self.rank, nonzero_count(torch.linalg.svdvals(torch.cat(list(X), dim=1)), ambient),
                nonzero_count(torch.linalg.svdvals(torch.cat(list(X.mT), dim=1)), ambient))
        if r == 0:
            return None
        U, V = tucker2(X, r)
        coords = [(U.T @ t @ V).to(COMPUTE_DTYPE) for t in taus]
        O = dense(self.inner().merge(coords, key)).to(SVD_DTYPE)
        return self.alpha * (U @ O), V.T
