"""Iso-CTS, core-space variant (after Marczak et al., ICML 2025; danielm1405/iso-merging)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ALPHA_GRID, FactorMethod, Param

if TYPE_CHECKING:
    from torch import Tensor

    from ..delta import Delta
    from .factor import Factors


def split_sizes(p: int, tasks: int, fraction: float) -> tuple[int, int]:
    """(k_c, s): the common block size and the per-task block size, k_c + T·s = p.

    As the reference: k₀ = int(f·p), S = round((p − k₀)/T)·T, k_c = p − S, s = S/T. When rounding
    up makes S exceed p (only for tiny p with small f) we take S = ⌊p/T⌋·T instead.
    """
    k0 = int(fraction * p)
    S = round((p - k0) / tasks) * tasks
    if S > p:
        S = (p // tasks) * tasks
    return p - S, S // tasks


def spectral_norm(C: Delta) -> float:
    from ..delta import svd

    S = svd(C)[1]
    return float(S[0]) if S.numel() else 0.0


def residual(C: Delta, Uc: Tensor) -> Delta:
    """C − P_c·P_cᵀ·C with P_c = Uc; a LowRank core stays one (its left factor is projected)."""
    from ..delta import LowRank

    if isinstance(C, LowRank):
        return LowRank(C.B - Uc @ (Uc.T @ C.B), C.A)
    return C - Uc @ (Uc.T @ C)


def iso_cts_core(cores: list[Delta], fraction: float, shape: tuple[int, int]) -> Factors | None:
    """The recipe on a×b cores: σ̄·polar(Ũ)·polar(Ṽ)ᵀ as factors (σ̄·polar(Ũ), polar(Ṽ)ᵀ), or None if zero."""
    import torch

    from ..delta import all_lowrank, svd, svds, weighted_sum
    from .factor import nonzero_count, polar

    a, b = cores[0].shape
    k_c, s = split_sizes(min(a, b), len(cores), fraction)
    U, S, Vh = svd(weighted_sum(cores, [1.0] * len(cores)))
    # Residuals and sums may cancel to rounding noise: measure "non-zero" against the largest input.
    scale = max([spectral_norm(C) for C in cores] + [float(S[0]) if S.numel() else 0.0])
    k_c = min(k_c, nonzero_count(S, shape, scale))
    Uc, Sc, Vhc = U[:, :k_c], S[:k_c], Vh[:k_c]
    Us, Ss, Vhs = [Uc], [Sc], [Vhc]
    residuals = [residual(C, Uc) for C in cores]
    for Ut, St, Vht in svds(residuals) if all_lowrank(residuals) else map(svd, residuals):
        k = min(s, nonzero_count(St, shape, scale))
        Us.append(Ut[:, :k])
        Ss.append(St[:k])
        Vhs.append(Vht[:k])
    sigma = torch.cat(Ss)
    if sigma.numel() == 0:
        return None
    Ou = polar(torch.cat(Us, dim=1), shape)
    Ov = polar(torch.cat(Vhs, dim=0).T, shape)
    return sigma.mean() * Ou, Ov.T


class IsoCTS(FactorMethod):
    """Iso-CTS, **core-space variant** (ours): the Iso-CTS recipe run on the task cores.

    The reference works in the full n×m space with p = min(n, m). On LoRA inputs it is degenerate:
    the common block (top 80 % of p directions of Σ_t τ_t) already contains every task's range, so
    every task residual is exactly zero and the task-specific blocks are arbitrary null vectors.
    Our variant writes τ_t = Q_L·C_t·Q_Rᵀ with orthonormal bases of the joint column and row spaces
    (numerical ranks a, b ≤ Σ r_t; see ``factor.task_cores``) and runs the recipe on the a×b cores
    with p → min(a, b): common block = top-k_c of Σ_t C_t (k₀ = int(f·p), S = round((p − k₀)/T)·T,
    k_c = p − S, s = S/T); per task the top-s of C_t − P_c·P_cᵀ·C_t; polar factors of the assembled
    bases; σ̄ = the mean of the assembled singular values; lift with Q_L (·) Q_Rᵀ and scale by α.
    For dense full-rank inputs a = n, b = m and this is the reference recipe in rotated coordinates.

    Decisions where the spec is silent: assembled components whose singular value is numerically
    zero (a task residual of lower rank than s, a zero task) are left out of the bases and of σ̄
    instead of contributing arbitrary directions. The output is a LowRank of rank ≤ min(a, b).
    """

    name = "iso_cts"
    description = "Iso-CTS (core-space variant): common + task-specific subspaces, isotropic spectrum."
    params = (
        Param("common_fraction", 0.8, "fraction f of the core size given to the common subspace"),
        Param("alpha", 1.0, "scaling α of the merged update", grid=ALPHA_GRID),
    )

    def validate(self) -> None:
        if not 0.0 <= self.common_fraction <= 1.0:
            raise ValueError(f"iso_cts: common_fraction must be in [0, 1], got {self.common_fraction}")

    def factors(self, deltas: list[Delta], shape: tuple[int, int]) -> Factors | None:
        from .factor import task_cores

        tc = task_cores(deltas, shape)
        if min(tc.left.shape[1], tc.right.shape[1]) == 0:
            return None
        result = iso_cts_core(tc.cores, self.common_fraction, shape)
        if result is None:
            return None
        Bc, Ac = result
        return self.alpha * (tc.left @ Bc), Ac @ tc.right.T
